package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
)

// Loaded is the outcome of Load.
type Loaded struct {
	Config *Config
	// File is the configuration file read, if any.
	File string
	// PrintConfig asks for the configuration to be printed, not served.
	PrintConfig bool
	// Warnings are worth logging once the logger exists: environment
	// variables that look like settings but are none.
	Warnings []string
}

// Load builds the configuration of `mqcluster serve` from its arguments
// and the environment, each overriding the one before: the defaults, the
// YAML file (--config, or MQCLUSTER_CONFIG), the MQCLUSTER_* environment
// variables, the flags. It then fills in what was left unset (the default
// listener) and validates the whole. environ is os.Environ()'s form;
// usage receives the flags' help and errors.
func Load(args, environ []string, usage io.Writer) (*Loaded, error) {
	fs := flag.NewFlagSet("mqcluster serve", flag.ContinueOnError)
	// The flag package prints errors and the usage to the output: only
	// -h gets the usage, an error is returned once, by the caller.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	help := func() {
		fs.SetOutput(usage)
		fmt.Fprintf(usage, "Usage: mqcluster serve [flags]\n\n"+
			"Every setting is a key of the --config file, an environment variable and a flag:\n"+
			"limits.max_packet_size is MQCLUSTER_LIMITS_MAX_PACKET_SIZE and --limits-max-packet-size.\n"+
			"Flags win over the environment, which wins over the file. See docs/configuration.md.\n\n")
		fs.PrintDefaults()
	}
	file := fs.String("config", "", "YAML configuration file (or MQCLUSTER_CONFIG)")
	printCfg := fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	listen := fs.String("listen", "", "address of the plain MQTT (tcp) listener: the first tcp listener of the file, else one more (or MQCLUSTER_LISTEN; default :1883 when no listener is configured)")
	def := Default()
	keys := Keys()
	byPath := map[string]*Key{}
	for i := range keys {
		k := &keys[i]
		byPath[k.Path] = k
		fs.Var(&keyValue{key: k, def: k.value(def)}, k.Flag, k.Help)
	}
	for name, path := range legacyFlags {
		k := byPath[path]
		fs.Var(&keyValue{key: k, def: k.value(def)}, name, "same as --"+k.Flag)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			help()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	env := map[string]string{}
	for _, kv := range environ {
		if name, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(name, EnvPrefix) {
			env[name] = val
		}
	}
	out := &Loaded{Config: Default(), PrintConfig: *printCfg}
	cfg := out.Config

	out.File = env[EnvPrefix+"CONFIG"]
	if isSet(fs, "config") {
		out.File = *file
	}
	if out.File != "" {
		data, err := os.ReadFile(out.File)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decodeFile(data, cfg); err != nil {
			return nil, prefixed("config: "+out.File+": ", err)
		}
	}

	var errs []error
	// MQCLUSTER_ADMIN is `mqcluster ctl`'s.
	known := map[string]bool{EnvPrefix + "CONFIG": true, EnvPrefix + "LISTEN": true, EnvPrefix + "ADMIN": true}
	for i := range keys {
		k := &keys[i]
		known[k.Env] = true
		if val, ok := env[k.Env]; ok {
			if err := k.set(cfg, val); err != nil {
				errs = append(errs, fmt.Errorf("config: %s (%s): %q: %w", k.Path, k.Env, val, err))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(env)) {
		if !known[name] && !strings.HasPrefix(name, EnvPrefix+"TEST") {
			out.Warnings = append(out.Warnings, fmt.Sprintf("environment variable %s is not a setting of mqcluster; ignored", name))
		}
	}
	addr := env[EnvPrefix+"LISTEN"]
	fs.Visit(func(f *flag.Flag) {
		if kv, ok := f.Value.(*keyValue); ok {
			if err := kv.key.set(cfg, kv.raw); err != nil {
				errs = append(errs, fmt.Errorf("config: %s (--%s): %w", kv.key.Path, f.Name, err))
			}
		}
	})
	if isSet(fs, "listen") {
		addr = *listen
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg.normalize(addr)
	return out, cfg.Validate()
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// prefixed puts prefix before each of the errors joined in err.
func prefixed(prefix string, err error) error {
	var errs []error
	for _, e := range unjoin(err) {
		errs = append(errs, fmt.Errorf("%s%w", prefix, e))
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// keyValue is the flag of a key: it checks the value when the flag is
// parsed and keeps it for Load to apply over the file and environment.
type keyValue struct {
	key *Key
	def string
	raw string
}

func (v *keyValue) String() string {
	if v == nil {
		return ""
	}
	return v.def
}

func (v *keyValue) Set(s string) error {
	scratch := Default()
	if err := v.key.set(scratch, s); err != nil {
		return err
	}
	v.raw = s
	return nil
}

// IsBoolFlag lets a boolean key's flag stand alone: --limits-drop-oldest.
func (v *keyValue) IsBoolFlag() bool {
	t := v.key.typ
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Bool
}
