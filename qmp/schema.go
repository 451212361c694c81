package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// SchemaEntry is one entry of query-qmp-schema (QEMU's SchemaInfo). Lists
// use omitzero so that an empty list QEMU sent ("members": []) survives a
// round trip. QEMU
// names commands and events plainly but hides most type names behind
// numbers ("141", "[142]"); the Schema helpers resolve them. Members this
// package does not know are kept in Extra.
type SchemaEntry struct {
	Name     string `json:"name"`
	MetaType string `json:"meta-type"` // builtin, enum, array, object, alternate, command, event

	// command and event
	ArgType  string `json:"arg-type,omitempty"`
	RetType  string `json:"ret-type,omitempty"`  // command
	AllowOOB bool   `json:"allow-oob,omitempty"` // command

	// enum: Members (names only) and, on older QEMUs, Values
	Values []string `json:"values,omitzero"`
	// object, alternate and enum members
	Members []SchemaMember `json:"members,omitzero"`
	// object variants
	Tag      string          `json:"tag,omitempty"`
	Variants []SchemaVariant `json:"variants,omitzero"`

	ElementType string `json:"element-type,omitempty"` // array
	JSONType    string `json:"json-type,omitempty"`    // builtin

	Features []string `json:"features,omitzero"`

	Extra map[string]json.RawMessage `json:"-"`
}

// SchemaMember is a member of an object, enum or alternate.
type SchemaMember struct {
	Name     string          `json:"name,omitempty"`
	Type     string          `json:"type,omitempty"`
	Default  json.RawMessage `json:"default,omitempty"`
	Features []string        `json:"features,omitzero"`
}

// SchemaVariant is a variant of a union object.
type SchemaVariant struct {
	Case string `json:"case"`
	Type string `json:"type"`
}

// UnmarshalJSON keeps unknown members in Extra.
func (e *SchemaEntry) UnmarshalJSON(b []byte) error {
	type plain SchemaEntry
	var v plain
	extra, err := unmarshalKeepUnknown(b, &v)
	if err != nil {
		return err
	}
	*e = SchemaEntry(v)
	e.Extra = extra
	return nil
}

// MarshalJSON writes Extra back.
func (e SchemaEntry) MarshalJSON() ([]byte, error) {
	type plain SchemaEntry
	return marshalWithExtra(plain(e), e.Extra)
}

// Schema is a decoded query-qmp-schema reply.
type Schema struct {
	Entries []SchemaEntry
	byName  map[string]*SchemaEntry
}

// ParseSchema decodes the "return" member of query-qmp-schema: a JSON array
// of SchemaInfo objects, each with a name and a meta-type.
func ParseSchema(data []byte) (*Schema, error) {
	var entries []SchemaEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("qmp: query-qmp-schema: %w", err)
	}
	if entries == nil {
		return nil, errors.New("qmp: query-qmp-schema: not a schema array")
	}
	s := &Schema{Entries: entries, byName: make(map[string]*SchemaEntry, len(entries))}
	for i := range entries {
		e := &entries[i]
		if e.Name == "" || e.MetaType == "" {
			return nil, fmt.Errorf("qmp: query-qmp-schema: entry %d has no name or meta-type", i)
		}
		if _, dup := s.byName[e.Name]; dup {
			return nil, fmt.Errorf("qmp: query-qmp-schema: duplicate entry %q", e.Name)
		}
		s.byName[e.Name] = e
	}
	return s, nil
}

// QuerySchema runs query-qmp-schema.
func QuerySchema(ctx context.Context, ex Executor) (*Schema, error) {
	var raw json.RawMessage
	if err := ex.Execute(ctx, "query-qmp-schema", nil, &raw); err != nil {
		return nil, err
	}
	return ParseSchema(raw)
}

// Lookup returns the entry called name (a command, an event or a type's
// schema name), or nil.
func (s *Schema) Lookup(name string) *SchemaEntry { return s.byName[name] }

func (s *Schema) names(metaType string) []string {
	var out []string
	for _, e := range s.Entries {
		if e.MetaType == metaType {
			out = append(out, e.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Commands returns every command name, sorted.
func (s *Schema) Commands() []string { return s.names("command") }

// Events returns every event name, sorted.
func (s *Schema) Events() []string { return s.names("event") }

// HasCommand reports whether QEMU has the command.
func (s *Schema) HasCommand(name string) bool {
	e := s.byName[name]
	return e != nil && e.MetaType == "command"
}

// HasEvent reports whether QEMU can send the event.
func (s *Schema) HasEvent(name string) bool {
	e := s.byName[name]
	return e != nil && e.MetaType == "event"
}

// EnumValues returns the values of the enum type called typeName (a schema
// name such as "407"), or nil when it is not an enum.
func (s *Schema) EnumValues(typeName string) []string {
	e := s.byName[typeName]
	if e == nil || e.MetaType != "enum" {
		return nil
	}
	if len(e.Members) > 0 {
		out := make([]string, 0, len(e.Members))
		for _, m := range e.Members {
			out = append(out, m.Name)
		}
		return out
	}
	return append([]string(nil), e.Values...)
}

// ObjectMembers returns the members of the object type called typeName,
// including those of every variant (deduplicated by name, first wins), or
// nil when it is not an object.
func (s *Schema) ObjectMembers(typeName string) []SchemaMember {
	return s.objectMembers(typeName, make(map[string]bool))
}

func (s *Schema) objectMembers(typeName string, visiting map[string]bool) []SchemaMember {
	e := s.byName[typeName]
	if e == nil || e.MetaType != "object" || visiting[typeName] {
		return nil
	}
	visiting[typeName] = true
	out := append([]SchemaMember(nil), e.Members...)
	seen := make(map[string]bool, len(out))
	for _, m := range out {
		seen[m.Name] = true
	}
	for _, v := range e.Variants {
		for _, m := range s.objectMembers(v.Type, visiting) {
			if !seen[m.Name] {
				seen[m.Name] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// member returns the type of member name of object typeName.
func (s *Schema) member(typeName, name string) (string, bool) {
	for _, m := range s.ObjectMembers(typeName) {
		if m.Name == name {
			return m.Type, true
		}
	}
	return "", false
}

// elementType returns the element type of an array type.
func (s *Schema) elementType(typeName string) string {
	e := s.byName[typeName]
	if e == nil || e.MetaType != "array" {
		return ""
	}
	return e.ElementType
}

// CommandArgs returns the argument members of a command (nil when unknown
// or without arguments).
func (s *Schema) CommandArgs(cmd string) []SchemaMember {
	e := s.byName[cmd]
	if e == nil || e.MetaType != "command" {
		return nil
	}
	return s.ObjectMembers(e.ArgType)
}

// commandResult returns the return type of a command.
func (s *Schema) commandResult(cmd string) string {
	e := s.byName[cmd]
	if e == nil || e.MetaType != "command" {
		return ""
	}
	return e.RetType
}

// MigrationCapabilities returns the values of the MigrationCapability enum
// (what migrate-set-capabilities accepts), in QEMU's order.
func (s *Schema) MigrationCapabilities() []string {
	// migrate-set-capabilities {capabilities: [MigrationCapabilityStatus]}
	// where MigrationCapabilityStatus = {capability: MigrationCapability, state: bool}.
	if e := s.byName["migrate-set-capabilities"]; e != nil && e.MetaType == "command" {
		if arr, ok := s.member(e.ArgType, "capabilities"); ok {
			if capType, ok := s.member(s.elementType(arr), "capability"); ok {
				if v := s.EnumValues(capType); v != nil {
					return v
				}
			}
		}
	}
	// Fall back to the reply of query-migrate-capabilities.
	if capType, ok := s.member(s.elementType(s.commandResult("query-migrate-capabilities")), "capability"); ok {
		return s.EnumValues(capType)
	}
	return nil
}

// MigrationParameters returns the names of the migration parameters: the
// members of migrate-set-parameters' arguments (MigrateSetParameters) and of
// query-migrate-parameters' reply (MigrationParameters), sorted.
func (s *Schema) MigrationParameters() []string {
	set := make(map[string]bool)
	for _, m := range s.CommandArgs("migrate-set-parameters") {
		set[m.Name] = true
	}
	for _, m := range s.ObjectMembers(s.commandResult("query-migrate-parameters")) {
		set[m.Name] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

// CompressionMethods returns the values of the MultiFDCompression enum (the
// type of the multifd-compression parameter), e.g. none, zlib, zstd.
func (s *Schema) CompressionMethods() []string {
	if t, ok := s.member(s.byName["migrate-set-parameters"].argType(), "multifd-compression"); ok {
		if v := s.EnumValues(t); v != nil {
			return v
		}
	}
	if t, ok := s.member(s.commandResult("query-migrate-parameters"), "multifd-compression"); ok {
		return s.EnumValues(t)
	}
	return nil
}

func (e *SchemaEntry) argType() string {
	if e == nil {
		return ""
	}
	return e.ArgType
}
