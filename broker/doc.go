// Package broker is the MQTT engine every mqcluster node runs: listeners,
// connections, sessions, the QoS 0/1/2 flows in both directions, retained
// messages, wills, shared subscriptions, topic aliases, and the hooks for
// authentication, authorization and persistence.
//
// It owns MQTT semantics and speaks MQTT reason codes. It never imports the
// cluster packages (fsm, node, transport): what it needs from a cluster it
// declares as small interfaces that the node satisfies.
package broker
