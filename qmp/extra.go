package qmp

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
)

// Typed replies keep the members this package does not know (newer QEMUs
// add some) in an Extra map instead of failing or dropping them. These
// helpers do the bookkeeping for every such type.

var knownFieldsCache sync.Map // reflect.Type -> map[string]bool

// jsonFieldNames returns the JSON member names of struct type t.
func jsonFieldNames(t reflect.Type) map[string]bool {
	if v, ok := knownFieldsCache.Load(t); ok {
		return v.(map[string]bool)
	}
	names := make(map[string]bool)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		names[name] = true
	}
	knownFieldsCache.Store(t, names)
	return names
}

// unmarshalKeepUnknown unmarshals data into v (a pointer to a struct
// without its own UnmarshalJSON) and returns the members v has no field for,
// or nil when there are none.
func unmarshalKeepUnknown(data []byte, v any) (map[string]json.RawMessage, error) {
	if err := json.Unmarshal(data, v); err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, err
	}
	known := jsonFieldNames(reflect.TypeOf(v).Elem())
	for k := range all {
		if known[k] {
			delete(all, k)
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// marshalWithExtra marshals v (a struct without its own MarshalJSON) and
// adds the extra members that v does not already set.
func marshalWithExtra(v any, extra map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, x := range extra {
		if _, ok := m[k]; !ok {
			m[k] = x
		}
	}
	return json.Marshal(m)
}
