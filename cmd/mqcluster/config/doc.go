// Package config owns the configuration of `mqcluster serve`: its model
// (Config, one YAML document), where it comes from (the defaults, a file,
// MQCLUSTER_* environment variables and flags, each overriding the one
// before), its validation with errors that name the bad key, and its
// printing (--print-config). It translates the whole into the
// configurations of the packages it feeds: broker, node, broker/listener
// and broker/auth.
//
// It never starts anything: no socket, no goroutine. docs/configuration.md
// describes every key; a test keeps the two in step.
package config
