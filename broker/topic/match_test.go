package topic

import "testing"

// matchCases drive both the function Match and Trie.Match/HasMatch. Most come
// from the examples of section 4.7 of the specifications.
var matchCases = []struct {
	desc   string
	filter string
	name   string
	want   bool
}{
	// 4.7.1.2 Multi-level wildcard [MQTT-4.7.1-2].
	{"'#' matches the parent level (4.7.1.2 example)", "sport/tennis/player1/#", "sport/tennis/player1", true},
	{"'#' matches one level below (4.7.1.2 example)", "sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"'#' matches several levels below (4.7.1.2 example)", "sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"'#' does not match a sibling", "sport/tennis/player1/#", "sport/tennis/player2", false},
	{"'#' does not match above its parent", "sport/tennis/player1/#", "sport/tennis", false},
	{"'sport/#' matches 'sport' (4.7.1.2 non-normative)", "sport/#", "sport", true},
	{"'sport/#' matches 'sport/'", "sport/#", "sport/", true},
	{"'sport/#' does not match 'sports'", "sport/#", "sports", false},
	{"'#' alone matches everything", "#", "sport/tennis/player1", true},
	{"'#' alone matches a single empty level", "#", "/", true},
	{"'/#' matches '/'", "/#", "/", true},
	{"'/#' matches '/finance'", "/#", "/finance", true},
	{"'/#' does not match 'finance'", "/#", "finance", false},

	// 4.7.1.3 Single-level wildcard [MQTT-4.7.1-3].
	{"'+' matches one level (4.7.1.3 example)", "sport/tennis/+", "sport/tennis/player1", true},
	{"'+' matches another level (4.7.1.3 example)", "sport/tennis/+", "sport/tennis/player2", true},
	{"'+' does not match two levels (4.7.1.3 example)", "sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"'sport/+' does not match 'sport' (4.7.1.3 example)", "sport/+", "sport", false},
	{"'sport/+' matches 'sport/' (4.7.1.3 example)", "sport/+", "sport/", true},
	{"'+' alone matches one level", "+", "finance", true},
	{"'+' alone does not match '/finance' (4.7.1.3 example)", "+", "/finance", false},
	{"'+/+' matches '/finance' (4.7.1.3 example)", "+/+", "/finance", true},
	{"'/+' matches '/finance' (4.7.1.3 example)", "/+", "/finance", true},
	{"'+' in the middle", "sport/+/player1", "sport/tennis/player1", true},
	{"'+' in the middle matches an empty level", "sport/+/player1", "sport//player1", true},
	{"'+' in the middle needs the rest to match", "sport/+/player1", "sport/tennis/player2", false},
	{"'+/tennis/#' (4.7.1.3 example)", "+/tennis/#", "sport/tennis/player1/ranking", true},
	{"'+/#' matches one level: '#' matches the parent", "+/#", "sport", true},
	{"'+/+' does not match one level", "+/+", "sport", false},

	// 4.7.2 Topics beginning with $ [MQTT-4.7.2-1].
	{"'#' does not match '$SYS/...' [MQTT-4.7.2-1]", "#", "$SYS/monitor/Clients", false},
	{"'+/monitor/Clients' does not match '$SYS/monitor/Clients' [MQTT-4.7.2-1]", "+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"'+' does not match '$SYS' [MQTT-4.7.2-1]", "+", "$SYS", false},
	{"'+/#' does not match '$SYS/x' [MQTT-4.7.2-1]", "+/#", "$SYS/x", false},
	{"'$SYS/#' matches '$SYS/...' (4.7.2 example)", "$SYS/#", "$SYS/monitor/Clients", true},
	{"'$SYS/#' matches '$SYS'", "$SYS/#", "$SYS", true},
	{"'$SYS/monitor/+' matches '$SYS/monitor/Clients' (4.7.2 example)", "$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"the '$' rule is about the first level only", "a/+", "a/$b", true},
	{"'#' matches '$' in a later level", "a/#", "a/$SYS/x", true},
	{"'#' matches a name with '$' after its first byte", "#", "a$", true},

	// 4.7.3 Topic semantic and usage.
	{"case sensitive (4.7.3 non-normative)", "ACCOUNTS", "Accounts", false},
	{"'/finance' differs from 'finance' (4.7.3 non-normative)", "/finance", "finance", false},
	{"spaces are ordinary characters (4.7.3 non-normative)", "Accounts payable/+", "Accounts payable/x", true},
	{"no normalization: precomposed vs decomposed [MQTT-4.7.3-4]", "caf\u00e9", "cafe\u0301", false},
	{"identical multi-byte levels match", "\u6e29\u5ea6/+", "\u6e29\u5ea6/\uc13c\uc11c", true},
	{"a longer name does not match an exact filter", "a/b", "a/b/c", false},
	{"a shorter name does not match an exact filter", "a/b/c", "a/b", false},
	{"empty levels are levels", "a//b", "a/b", false},
	{"trailing separator is a level", "a/b/", "a/b/", true},
}

func TestMatch(t *testing.T) {
	for _, tc := range matchCases {
		t.Run(tc.desc, func(t *testing.T) {
			if got := Match(tc.filter, tc.name); got != tc.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tc.filter, tc.name, got, tc.want)
			}
			if got := refMatch(tc.filter, tc.name); got != tc.want {
				t.Errorf("reference matcher disagrees with the table: refMatch(%q, %q) = %v", tc.filter, tc.name, got)
			}
		})
	}
}

func TestMatchAllocatesNothing(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if !Match("sport/+/player1/#", "sport/tennis/player1/score/wimbledon") {
			t.Fatal("no match")
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per run = %v, want 0", allocs)
	}
}
