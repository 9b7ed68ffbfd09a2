// Package topic owns MQTT topic names and topic filters: their validation
// (UTF-8 rules, U+0000, wildcard placement, level limits), the $share/{group}/
// prefix of shared subscriptions, and the concurrent subscription trie that
// maps a topic name to the subscriptions whose filters match it, including the
// rule that wildcards at the first level never match topics starting with '$'
// [MQTT-4.7.2-1].
//
// The pieces fit together like this: a SUBSCRIBE filter goes through
// ParseShare, then ValidateFilter on the filter proper, then Trie.Add with
// its share group; a PUBLISH topic goes through ValidateName, then
// Trie.Match. Match is the same rule for one filter and one name, for
// retained messages and authorization checks. The trie trusts its input and
// does not validate again.
//
// Nothing here recurses per character or allocates per level: validation is
// one pass that stops at the level limit, Match on a trie allocates only by
// growing the caller's slice, and Remove prunes the nodes it empties.
//
// It is a leaf: standard library only, no I/O, no logging. Reason codes and
// what to tell a client belong to broker/packet and the broker.
package topic
