package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Key is one setting that the file, the environment and the flags can
// set: every field of Config outside the listeners.
type Key struct {
	Path  string // in the file: "limits.max_packet_size"
	Env   string // MQCLUSTER_LIMITS_MAX_PACKET_SIZE
	Flag  string // --limits-max-packet-size
	Help  string
	index []int // field indexes from Config
	typ   reflect.Type
}

// EnvPrefix starts the name of every environment variable of a key.
const EnvPrefix = "MQCLUSTER_"

// legacyFlags are the flags mqcluster had before the configuration file,
// kept as other names of their keys.
var legacyFlags = map[string]string{
	"node-id":             "cluster.node_id",
	"bootstrap-expect":    "cluster.bootstrap_expect",
	"join":                "cluster.join",
	"raft-addr":           "cluster.raft_addr",
	"gossip-addr":         "cluster.gossip_addr",
	"grpc-addr":           "cluster.grpc_addr",
	"max-queued-messages": "limits.max_queued_messages",
	"max-queued-bytes":    "limits.max_queued_bytes",
	"write-queue-bytes":   "limits.write_queue_bytes",
	"leave-on-shutdown":   "cluster.leave_on_shutdown",
}

// Keys lists every key, in the order of the file.
func Keys() []Key {
	var out []Key
	collectKeys(reflect.TypeFor[Config](), "", nil, &out)
	return out
}

func collectKeys(t reflect.Type, prefix string, index []int, out *[]Key) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		path := joinPath(prefix, name)
		idx := append(append([]int(nil), index...), i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			// listeners: the file only.
		case ft.Kind() == reflect.Struct:
			collectKeys(ft, path, idx, out)
		default:
			*out = append(*out, Key{Path: path, Help: f.Tag.Get("help"), index: idx, typ: f.Type,
				Env:  EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_")),
				Flag: strings.NewReplacer(".", "-", "_", "-").Replace(path)})
		}
	}
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// field returns the key's field in c, allocating the structs on the way
// (auth.jwt).
func (k *Key) field(c *Config) reflect.Value {
	v := reflect.ValueOf(c).Elem()
	for i, idx := range k.index {
		v = v.Field(idx)
		if i < len(k.index)-1 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
	}
	return v
}

// value formats the key's value in c, "" when a struct on the way is nil.
func (k *Key) value(c *Config) string {
	v := reflect.ValueOf(c).Elem()
	for _, idx := range k.index {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return ""
			}
			v = v.Elem()
		}
		v = v.Field(idx)
	}
	return formatScalar(v)
}

// set parses s into the key's field of c.
func (k *Key) set(c *Config, s string) error { return setScalar(k.field(c), s) }

var durationType = reflect.TypeFor[time.Duration]()

// setScalar parses s into v the same way for the file, the environment and
// the flags.
func setScalar(v reflect.Value, s string) error {
	s = strings.TrimSpace(s)
	switch {
	case v.Kind() == reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		if err := setScalar(nv.Elem(), s); err != nil {
			return err
		}
		v.Set(nv)
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("want a duration such as 500ms, 10s or 1m30s")
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		v.SetBool(b)
	case v.CanInt():
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return errors.New("want an integer")
		}
		v.SetInt(n)
	case v.CanUint():
		n, err := strconv.ParseUint(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want an integer 0..%d", uint64(1)<<v.Type().Bits()-1)
		}
		v.SetUint(n)
	case v.CanFloat():
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return errors.New("want a number")
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var items []string
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot set a %s", v.Type())
	}
	return nil
}

// formatScalar is the inverse of setScalar.
func formatScalar(v reflect.Value) string {
	switch {
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return ""
		}
		return formatScalar(v.Elem())
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = formatScalar(v.Index(i))
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}
