package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest topic name or topic filter in bytes: both are UTF-8
// Encoded Strings with a two-byte length prefix [MQTT-4.7.3-3].
const MaxLen = 65535

// Sentinel errors. The functions of this package wrap them with context
// (byte offsets, limits); test with errors.Is.
var (
	// ErrEmpty: a topic name or filter must be at least one character long
	// [MQTT-4.7.3-1].
	ErrEmpty = errors.New("topic: empty")
	// ErrTooLong: longer than MaxLen bytes [MQTT-4.7.3-3].
	ErrTooLong = errors.New("topic: longer than 65535 bytes")
	// ErrInvalidUTF8: ill-formed UTF-8, including encoded surrogates and
	// overlong forms [MQTT-1.5.4-1].
	ErrInvalidUTF8 = errors.New("topic: invalid UTF-8")
	// ErrNullChar: U+0000 is never allowed [MQTT-1.5.4-2], [MQTT-4.7.3-2].
	ErrNullChar = errors.New("topic: contains U+0000")
	// ErrWildcardInName: '+' or '#' in a topic name [MQTT-3.3.2-2].
	ErrWildcardInName = errors.New("topic: wildcard character in topic name")
	// ErrBadWildcard: '+' not occupying a whole level, or '#' not the whole
	// last level, of a topic filter (see ValidateFilter).
	ErrBadWildcard = errors.New("topic: misplaced wildcard in topic filter")
	// ErrTooManyLevels: more levels than the configured limit.
	ErrTooManyLevels = errors.New("topic: too many levels")
	// ErrBadShare: a filter starting with "$share/" that is not
	// $share/{ShareName}/{filter} [MQTT-4.8.2-1], [MQTT-4.8.2-2].
	ErrBadShare = errors.New("topic: malformed shared subscription")
)

// ValidateName checks a topic name as it is published: 1 to 65,535 bytes of
// well-formed UTF-8 without U+0000, no '+' or '#' anywhere, and at most
// maxLevels levels (maxLevels <= 0: no limit). A name has one level more than
// it has '/' separators; empty levels count ("a//b" has three).
//
// On the wire a 5.0 PUBLISH may carry a zero-length topic together with a
// Topic Alias; ValidateName is for the resolved name, so "" is ErrEmpty.
//
// It makes one pass over the name, stops at the first fault and allocates
// nothing for a valid name.
func ValidateName(name string, maxLevels int) error {
	if err := checkLength(name); err != nil {
		return err
	}
	levels := 1
	for i := 0; i < len(name); {
		c := name[i]
		if c >= utf8.RuneSelf {
			n, err := checkRune(name, i)
			if err != nil {
				return err
			}
			i += n
			continue
		}
		switch c {
		case 0:
			return nullAt(i)
		case '+', '#':
			return fmt.Errorf("%w: %q at byte %d", ErrWildcardInName, c, i)
		case '/':
			levels++
			if maxLevels > 0 && levels > maxLevels {
				return tooManyLevels(maxLevels, i)
			}
		}
		i++
	}
	return nil
}

// ValidateFilter checks a topic filter as it is subscribed, after any
// $share/{ShareName}/ prefix has been removed by ParseShare: 1 to 65,535
// bytes of well-formed UTF-8 without U+0000, at most maxLevels levels
// (maxLevels <= 0: no limit), '#' only as the whole last level
// ([MQTT-4.7.1-2] in 3.1.1, [MQTT-4.7.1-1] in 5.0) and '+' only as a whole
// level ([MQTT-4.7.1-3] in 3.1.1, [MQTT-4.7.1-2] in 5.0).
//
// It makes one pass over the filter without recursion or allocation for a
// valid filter, and gives up at the first level past the limit, so 65,535
// separators cost no more than maxLevels of them.
func ValidateFilter(filter string, maxLevels int) error {
	if err := checkLength(filter); err != nil {
		return err
	}
	levels := 1
	for i := 0; i < len(filter); {
		c := filter[i]
		if c >= utf8.RuneSelf {
			n, err := checkRune(filter, i)
			if err != nil {
				return err
			}
			i += n
			continue
		}
		switch c {
		case 0:
			return nullAt(i)
		case '+':
			if (i > 0 && filter[i-1] != '/') || (i+1 < len(filter) && filter[i+1] != '/') {
				return fmt.Errorf("%w: '+' at byte %d is not a whole level", ErrBadWildcard, i)
			}
		case '#':
			if (i > 0 && filter[i-1] != '/') || i+1 != len(filter) {
				return fmt.Errorf("%w: '#' at byte %d is not the whole last level", ErrBadWildcard, i)
			}
		case '/':
			levels++
			if maxLevels > 0 && levels > maxLevels {
				return tooManyLevels(maxLevels, i)
			}
		}
		i++
	}
	return nil
}

// sharePrefix starts every shared subscription filter [MQTT-4.8.2-1].
const sharePrefix = "$share/"

// ParseShare splits a shared subscription filter $share/{ShareName}/{filter}
// into its share group and the filter proper.
//
// A filter that does not start with "$share/" is not a shared subscription:
// ParseShare returns shared == false, realFilter == filter and no error. That
// includes "$share" alone and "$sharex/..." (ordinary filters, which match
// '$' topics only literally).
//
// A filter that starts with "$share/" is a shared subscription and must have
// a ShareName of at least one character [MQTT-4.8.2-1] without '/', '+' or
// '#', followed by '/' and a non-empty topic filter [MQTT-4.8.2-2]. If it does
// not, ParseShare returns shared == true and an error wrapping ErrBadShare
// (and ErrNullChar or ErrInvalidUTF8 when that is what is wrong with the
// ShareName). It checks only the shape of the prefix: the caller validates
// realFilter with ValidateFilter.
//
// Shared subscriptions exist in MQTT 5.0; whether a 3.1.1 client may use them
// is the broker's decision, not this function's.
func ParseShare(filter string) (group, realFilter string, shared bool, err error) {
	if !strings.HasPrefix(filter, sharePrefix) {
		return "", filter, false, nil
	}
	rest := filter[len(sharePrefix):]
	slash := strings.IndexByte(rest, '/')
	group = rest
	if slash >= 0 {
		group = rest[:slash]
	}
	switch {
	case group == "":
		return "", "", true, fmt.Errorf("%w: empty share name", ErrBadShare)
	case strings.ContainsAny(group, "+#"):
		return "", "", true, fmt.Errorf("%w: share name %q contains '+' or '#'", ErrBadShare, group)
	case slash < 0 || slash+1 == len(rest):
		return "", "", true, fmt.Errorf("%w: share name %q is not followed by '/' and a topic filter", ErrBadShare, group)
	}
	if err := checkText(group); err != nil {
		return "", "", true, fmt.Errorf("%w: share name: %w", ErrBadShare, err)
	}
	return group, rest[slash+1:], true, nil
}

func checkLength(s string) error {
	if s == "" {
		return ErrEmpty
	}
	if len(s) > MaxLen {
		return fmt.Errorf("%w: %d bytes", ErrTooLong, len(s))
	}
	return nil
}

// checkRune checks the multi-byte UTF-8 sequence starting at s[i] and returns
// its length. utf8.DecodeRuneInString rejects surrogates and overlong forms
// as well as stray and truncated bytes.
func checkRune(s string, i int) (int, error) {
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return 0, fmt.Errorf("%w at byte %d", ErrInvalidUTF8, i)
	}
	return n, nil
}

// checkText checks the UTF-8 String rules alone: well formed, no U+0000.
func checkText(s string) error {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			if s[i] == 0 {
				return nullAt(i)
			}
			i++
			continue
		}
		n, err := checkRune(s, i)
		if err != nil {
			return err
		}
		i += n
	}
	return nil
}

func nullAt(i int) error {
	return fmt.Errorf("%w at byte %d", ErrNullChar, i)
}

func tooManyLevels(limit, i int) error {
	return fmt.Errorf("%w: more than %d (separator at byte %d)", ErrTooManyLevels, limit, i)
}
