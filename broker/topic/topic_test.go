package topic

import (
	"errors"
	"strings"
	"testing"
)

// Spec statement numbers differ between the versions for the wildcard rules:
// '#' placement is [MQTT-4.7.1-2] in 3.1.1 and [MQTT-4.7.1-1] in 5.0, '+'
// placement is [MQTT-4.7.1-3] in 3.1.1 and [MQTT-4.7.1-2] in 5.0. The cases
// below use the 3.1.1 numbers; the rules are the same.

const levelLimit = 128 // the project's default topic level limit (BAD-INPUT.md)

var (
	slashes65535 = strings.Repeat("/", 65535)                   // 65,536 empty levels (BAD-INPUT row 14)
	levels128    = strings.Repeat("a/", 127) + "a"              // exactly at the limit
	levels129    = strings.Repeat("a/", 128) + "a"              // one past it
	plus128      = strings.Repeat("+/", 127) + "#"              // wildcards at every level, at the limit
	bytes65535   = strings.Repeat("x", 65535)                   // longest legal string
	bytes65536   = strings.Repeat("x", 65536)                   // one byte too long
	multibyte    = "\u6e29\u5ea6/\uc13c\uc11c/\U0001F321\uFE0F" // CJK, Hangul, emoji
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		desc      string
		name      string
		maxLevels int
		want      error
	}{
		{"one level", "finance", 0, nil},
		{"several levels", "sport/tennis/player1", 0, nil},
		{"'/' alone is two empty levels [4.7.1.1 non-normative]", "/", 0, nil},
		{"leading, trailing and adjacent separators make empty levels", "/a//b/", 0, nil},
		{"space is a valid character [4.7.3 non-normative]", "sport tennis/player 1", 0, nil},
		{"'$' names are valid names; who may publish there is the broker's rule", "$SYS/broker/uptime", 0, nil},
		{"multi-byte UTF-8", multibyte, 0, nil},
		{"U+FEFF is kept, not an error [MQTT-1.5.4-3]", "\uFEFFa/b", 0, nil},
		{"65,535 bytes is the longest name [MQTT-4.7.3-3]", bytes65535, 0, nil},
		{"exactly at the level limit", levels128, levelLimit, nil},
		{"no limit when maxLevels is 0", levels129, 0, nil},
		{"65,535 separators are legal without a limit", slashes65535, 0, nil},

		{"empty [MQTT-4.7.3-1]", "", 0, ErrEmpty},
		{"65,536 bytes [MQTT-4.7.3-3]", bytes65536, 0, ErrTooLong},
		{"U+0000 [MQTT-4.7.3-2]", "a/\x00/b", 0, ErrNullChar},
		{"U+0000 alone [MQTT-1.5.4-2]", "\x00", 0, ErrNullChar},
		{"stray continuation byte [MQTT-1.5.4-1]", "a/\x80", 0, ErrInvalidUTF8},
		{"0xFF byte [MQTT-1.5.4-1]", "a\xffb", 0, ErrInvalidUTF8},
		{"encoded surrogate U+D800 [MQTT-1.5.4-1]", "a/\xed\xa0\x80", 0, ErrInvalidUTF8},
		{"overlong encoding of U+0000 [MQTT-1.5.4-1]", "a\xc0\x80", 0, ErrInvalidUTF8},
		{"overlong encoding of '/' [MQTT-1.5.4-1]", "a\xe0\x80\xafb", 0, ErrInvalidUTF8},
		{"truncated multi-byte sequence [MQTT-1.5.4-1]", "a/\xe6\xb8", 0, ErrInvalidUTF8},
		{"'+' level in a name [MQTT-3.3.2-2]", "sport/+", 0, ErrWildcardInName},
		{"'#' level in a name [MQTT-3.3.2-2]", "sport/#", 0, ErrWildcardInName},
		{"'+' inside a level [MQTT-3.3.2-2]", "a+b", 0, ErrWildcardInName},
		{"'#' inside a level [MQTT-3.3.2-2]", "sport/tennis#", 0, ErrWildcardInName},
		{"one level past the limit", levels129, levelLimit, ErrTooManyLevels},
		{"65,535 separators against the limit (BAD-INPUT row 14)", slashes65535, levelLimit, ErrTooManyLevels},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := ValidateName(tc.name, tc.maxLevels)
			checkErr(t, err, tc.want)
		})
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		desc      string
		filter    string
		maxLevels int
		want      error
	}{
		{"plain filter", "sport/tennis/player1", 0, nil},
		{"'#' alone matches everything [MQTT-4.7.1-2]", "#", 0, nil},
		{"'#' after a separator [MQTT-4.7.1-2]", "sport/tennis/player1/#", 0, nil},
		{"'#' after an empty level [MQTT-4.7.1-2]", "/#", 0, nil},
		{"'+' alone [MQTT-4.7.1-3]", "+", 0, nil},
		{"'+' as a middle level [MQTT-4.7.1-3]", "sport/+/player1", 0, nil},
		{"'+' as first and last level [MQTT-4.7.1-3]", "+/tennis/+", 0, nil},
		{"'+' with '#' [MQTT-4.7.1-3]", "+/tennis/#", 0, nil},
		{"'+' on both sides of an empty level", "+//+", 0, nil},
		{"'+/+' [4.7.1.3 non-normative]", "+/+", 0, nil},
		{"'/+' [4.7.1.3 non-normative]", "/+", 0, nil},
		{"'/' alone", "/", 0, nil},
		{"'$SYS/#' is an ordinary filter", "$SYS/#", 0, nil},
		{"a $share prefix is not this function's business", "$share/g/a", 0, nil},
		{"multi-byte UTF-8", multibyte + "/+", 0, nil},
		{"U+FEFF is kept [MQTT-1.5.4-3]", "\uFEFF/#", 0, nil},
		{"65,535 bytes [MQTT-4.7.3-3]", bytes65535, 0, nil},
		{"wildcards at every level, exactly at the limit", plus128, levelLimit, nil},
		{"65,535 separators are legal without a limit", slashes65535, 0, nil},

		{"empty [MQTT-4.7.3-1]", "", 0, ErrEmpty},
		{"65,536 bytes [MQTT-4.7.3-3]", bytes65536, 0, ErrTooLong},
		{"U+0000 [MQTT-4.7.3-2]", "a/\x00", 0, ErrNullChar},
		{"encoded surrogate [MQTT-1.5.4-1]", "\xed\xbf\xbf/#", 0, ErrInvalidUTF8},
		{"overlong encoding [MQTT-1.5.4-1]", "\xc1\xbf", 0, ErrInvalidUTF8},
		{"'#' followed by a level [MQTT-4.7.1-2] (BAD-INPUT row 15)", "a/#/b", 0, ErrBadWildcard},
		{"'#' not last [MQTT-4.7.1-2] (spec example)", "sport/tennis/#/ranking", 0, ErrBadWildcard},
		{"'#' after characters of its level [MQTT-4.7.1-2] (spec example)", "sport/tennis#", 0, ErrBadWildcard},
		{"'#' before characters of its level [MQTT-4.7.1-2]", "#a", 0, ErrBadWildcard},
		{"'##' [MQTT-4.7.1-2]", "##", 0, ErrBadWildcard},
		{"'#/' leaves an empty level after '#' [MQTT-4.7.1-2]", "#/", 0, ErrBadWildcard},
		{"'+' before characters [MQTT-4.7.1-3] (BAD-INPUT row 15)", "+a", 0, ErrBadWildcard},
		{"'+' after characters [MQTT-4.7.1-3]", "a+", 0, ErrBadWildcard},
		{"'sport+' [MQTT-4.7.1-3] (spec example)", "sport+", 0, ErrBadWildcard},
		{"'++' [MQTT-4.7.1-3]", "++", 0, ErrBadWildcard},
		{"'+' inside a middle level [MQTT-4.7.1-3]", "a/b+c/d", 0, ErrBadWildcard},
		{"'+#' [MQTT-4.7.1-3]", "+#", 0, ErrBadWildcard},
		{"one level past the limit", levels129, levelLimit, ErrTooManyLevels},
		{"65,535 separators against the limit (BAD-INPUT row 14)", slashes65535, levelLimit, ErrTooManyLevels},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := ValidateFilter(tc.filter, tc.maxLevels)
			checkErr(t, err, tc.want)
		})
	}
}

// A filter made of 65,535 separators is refused at the 129th level without
// reading the rest: the error names the byte where the scan stopped.
func TestValidateFilterStopsAtLevelLimit(t *testing.T) {
	for _, validate := range []func(string, int) error{ValidateFilter, ValidateName} {
		err := validate(slashes65535, levelLimit)
		if !errors.Is(err, ErrTooManyLevels) {
			t.Fatalf("err = %v, want ErrTooManyLevels", err)
		}
		if want := "more than 128 (separator at byte 127)"; !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to contain %q", err, want)
		}
	}
}

func TestValidateAllocatesNothing(t *testing.T) {
	filter := "sport/" + multibyte + "/+/player1/#"
	name := "sport/" + multibyte + "/x/player1/score"
	allocs := testing.AllocsPerRun(100, func() {
		if ValidateFilter(filter, levelLimit) != nil || ValidateName(name, levelLimit) != nil {
			t.Fatal("rejected a valid input")
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per run = %v, want 0", allocs)
	}
}

func TestParseShare(t *testing.T) {
	tests := []struct {
		desc       string
		filter     string
		wantGroup  string
		wantFilter string
		wantShared bool
		want       error
		alsoWant   error // a second error the result must wrap, if any
	}{
		{"ordinary filter", "sport/tennis/+", "", "sport/tennis/+", false, nil, nil},
		{"'$share' alone is an ordinary filter", "$share", "", "$share", false, nil, nil},
		{"'$sharex/...' is an ordinary filter", "$sharex/g/a", "", "$sharex/g/a", false, nil, nil},
		{"the prefix is case sensitive", "$SHARE/g/a", "", "$SHARE/g/a", false, nil, nil},
		{"'$share' as a later level is ordinary", "a/$share/g/b", "", "a/$share/g/b", false, nil, nil},
		{"spec example [4.8.2 non-normative]", "$share/consumer1/sport/tennis/+", "consumer1", "sport/tennis/+", true, nil, nil},
		{"one-character share name [MQTT-4.8.2-1]", "$share/g/#", "g", "#", true, nil, nil},
		{"filter of empty levels [MQTT-4.8.2-2]", "$share/g//", "g", "/", true, nil, nil},
		{"the filter keeps further '/' [MQTT-4.8.2-2]", "$share/g/a/b/c", "g", "a/b/c", true, nil, nil},
		{"'$' inside the share name", "$share/$g/a", "$g", "a", true, nil, nil},
		{"multi-byte share name", "$share/\u7ec4/a", "\u7ec4", "a", true, nil, nil},

		{"empty share name [MQTT-4.8.2-1] (BAD-INPUT row 15)", "$share//x", "", "", true, ErrBadShare, nil},
		{"nothing after the prefix [MQTT-4.8.2-1]", "$share/", "", "", true, ErrBadShare, nil},
		{"share name without a filter [MQTT-4.8.2-2] (BAD-INPUT row 15)", "$share/g", "", "", true, ErrBadShare, nil},
		{"share name and '/' but an empty filter [MQTT-4.8.2-2]", "$share/g/", "", "", true, ErrBadShare, nil},
		{"'+' inside the share name [MQTT-4.8.2-2]", "$share/a+b/x", "", "", true, ErrBadShare, nil},
		{"'+' as the share name [MQTT-4.8.2-2]", "$share/+/x", "", "", true, ErrBadShare, nil},
		{"'#' as the share name [MQTT-4.8.2-2]", "$share/#/x", "", "", true, ErrBadShare, nil},
		{"'#' inside the share name without a filter [MQTT-4.8.2-2]", "$share/a#", "", "", true, ErrBadShare, nil},
		{"U+0000 in the share name [MQTT-1.5.4-2]", "$share/a\x00b/x", "", "", true, ErrBadShare, ErrNullChar},
		{"invalid UTF-8 in the share name [MQTT-1.5.4-1]", "$share/\xff/x", "", "", true, ErrBadShare, ErrInvalidUTF8},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			group, filter, shared, err := ParseShare(tc.filter)
			checkErr(t, err, tc.want)
			if tc.alsoWant != nil && !errors.Is(err, tc.alsoWant) {
				t.Errorf("err = %v, want it to wrap %v as well", err, tc.alsoWant)
			}
			if group != tc.wantGroup || filter != tc.wantFilter || shared != tc.wantShared {
				t.Errorf("ParseShare(%q) = (%q, %q, %v), want (%q, %q, %v)",
					tc.filter, group, filter, shared, tc.wantGroup, tc.wantFilter, tc.wantShared)
			}
		})
	}
}

// checkErr fails unless err is nil when want is nil, and wraps want
// otherwise.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("err = %v, want nil", err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("err = %v, want %v", err, want)
	}
}
