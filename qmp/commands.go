package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
)

// VersionInfo is QEMU's version (query-version, and the greeting).
type VersionInfo struct {
	QEMU struct {
		Major int `json:"major"`
		Minor int `json:"minor"`
		Micro int `json:"micro"`
	} `json:"qemu"`
	Package string `json:"package"` // distribution suffix, e.g. "Debian 1:7.2+dfsg-7"
}

func (v VersionInfo) String() string {
	return fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
}

// AtLeast reports whether the version is major.minor or newer.
func (v VersionInfo) AtLeast(major, minor int) bool {
	if v.QEMU.Major != major {
		return v.QEMU.Major > major
	}
	return v.QEMU.Minor >= minor
}

// QueryVersion runs query-version.
func QueryVersion(ctx context.Context, ex Executor) (VersionInfo, error) {
	var v VersionInfo
	err := ex.Execute(ctx, "query-version", nil, &v)
	return v, err
}

// RunState is QEMU's run state (query-status "status").
type RunState string

// Run states (QEMU's RunState enum).
const (
	RunStateDebug         RunState = "debug"
	RunStateInMigrate     RunState = "inmigrate"
	RunStateInternalError RunState = "internal-error"
	RunStateIOError       RunState = "io-error"
	RunStatePaused        RunState = "paused"
	RunStatePostMigrate   RunState = "postmigrate"
	RunStatePrelaunch     RunState = "prelaunch"
	RunStateFinishMigrate RunState = "finish-migrate"
	RunStateRestoreVM     RunState = "restore-vm"
	RunStateRunning       RunState = "running"
	RunStateSaveVM        RunState = "save-vm"
	RunStateShutdown      RunState = "shutdown"
	RunStateSuspended     RunState = "suspended"
	RunStateWatchdog      RunState = "watchdog"
	RunStateGuestPanicked RunState = "guest-panicked"
	RunStateColo          RunState = "colo"
)

// StatusInfo is the reply of query-status.
type StatusInfo struct {
	Status  RunState `json:"status"`
	Running bool     `json:"running"`
	// Extra holds members this package does not know (e.g. the deprecated
	// "singlestep").
	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps unknown members in Extra.
func (s *StatusInfo) UnmarshalJSON(b []byte) error {
	type plain StatusInfo
	var p plain
	extra, err := unmarshalKeepUnknown(b, &p)
	if err != nil {
		return err
	}
	*s = StatusInfo(p)
	s.Extra = extra
	return nil
}

// MarshalJSON writes Extra back.
func (s StatusInfo) MarshalJSON() ([]byte, error) {
	type plain StatusInfo
	return marshalWithExtra(plain(s), s.Extra)
}

// QueryStatus runs query-status.
func QueryStatus(ctx context.Context, ex Executor) (StatusInfo, error) {
	var s StatusInfo
	err := ex.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Stop pauses the guest's vCPUs (QEMU sends STOP).
func Stop(ctx context.Context, ex Executor) error { return ex.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest's vCPUs (QEMU sends RESUME).
func Cont(ctx context.Context, ex Executor) error { return ex.Execute(ctx, "cont", nil, nil) }

// Quit makes QEMU exit; it replies first, then closes the monitor.
func Quit(ctx context.Context, ex Executor) error { return ex.Execute(ctx, "quit", nil, nil) }

// ObjectProperty is one entry of qom-list.
type ObjectProperty struct {
	Name string `json:"name"`
	// Type is the property type: a QAPI/C type ("bool", "uint32", "str"),
	// "child<T>" for a composition child of QOM type T or "link<T>" for a
	// reference.
	Type         string          `json:"type"`
	Description  string          `json:"description,omitempty"`
	DefaultValue json.RawMessage `json:"default-value,omitempty"`
}

// ChildType returns T for a "child<T>" property.
func (p ObjectProperty) ChildType() (string, bool) { return angleType(p.Type, "child<") }

// LinkType returns T for a "link<T>" property.
func (p ObjectProperty) LinkType() (string, bool) { return angleType(p.Type, "link<") }

func angleType(t, prefix string) (string, bool) {
	if len(t) > len(prefix) && t[:len(prefix)] == prefix && t[len(t)-1] == '>' {
		return t[len(prefix) : len(t)-1], true
	}
	return "", false
}

// QOMList runs qom-list on a QOM path (e.g. "/machine/peripheral").
func QOMList(ctx context.Context, ex Executor, path string) ([]ObjectProperty, error) {
	var props []ObjectProperty
	err := ex.Execute(ctx, "qom-list", map[string]string{"path": path}, &props)
	return props, err
}

// QOMGet runs qom-get and returns the property value as raw JSON.
func QOMGet(ctx context.Context, ex Executor, path, property string) (json.RawMessage, error) {
	var v json.RawMessage
	err := ex.Execute(ctx, "qom-get", map[string]string{"path": path, "property": property}, &v)
	return v, err
}

// ObjectTypeInfo is one entry of qom-list-types.
type ObjectTypeInfo struct {
	Name     string `json:"name"`
	Abstract bool   `json:"abstract,omitempty"`
	Parent   string `json:"parent,omitempty"`
}

// QOMListTypes runs qom-list-types: the QOM types implementing the given
// type or interface ("" for all), abstract ones included when asked.
func QOMListTypes(ctx context.Context, ex Executor, implements string, abstract bool) ([]ObjectTypeInfo, error) {
	args := map[string]any{"abstract": abstract}
	if implements != "" {
		args["implements"] = implements
	}
	var types []ObjectTypeInfo
	err := ex.Execute(ctx, "qom-list-types", args, &types)
	return types, err
}

// Object is a user-creatable QOM object for object-add.
type Object interface {
	// ObjectArgs returns object-add's arguments: "qom-type", "id" and the
	// type's properties.
	ObjectArgs() map[string]any
}

// TLSCredsX509 is a tls-creds-x509 object: QEMU's x509 credentials, loaded
// from Dir in QEMU's layout (ca-cert.pem, server-cert.pem, server-key.pem,
// client-cert.pem, client-key.pem).
type TLSCredsX509 struct {
	ID       string
	Dir      string
	Endpoint string // "client" or "server"
	// VerifyPeer: nil leaves QEMU's default (true: the peer must present a
	// certificate signed by the CA).
	VerifyPeer *bool
}

// ObjectArgs implements Object.
func (o TLSCredsX509) ObjectArgs() map[string]any {
	m := map[string]any{"qom-type": "tls-creds-x509", "id": o.ID, "dir": o.Dir, "endpoint": o.Endpoint}
	if o.VerifyPeer != nil {
		m["verify-peer"] = *o.VerifyPeer
	}
	return m
}

// AuthzList is an authz-list object: an allow-list of identities (for TLS
// peers, x509 distinguished names) matched exactly; everything else gets
// Policy.
type AuthzList struct {
	ID         string
	Policy     string // the default for identities not listed: "deny" (when empty) or "allow"
	Identities []string
}

// ObjectArgs implements Object.
func (o AuthzList) ObjectArgs() map[string]any {
	policy := o.Policy
	if policy == "" {
		policy = "deny"
	}
	rules := make([]map[string]string, 0, len(o.Identities))
	for _, id := range o.Identities {
		rules = append(rules, map[string]string{"match": id, "policy": "allow", "format": "exact"})
	}
	return map[string]any{"qom-type": "authz-list", "id": o.ID, "policy": policy, "rules": rules}
}

// RawObject is any other object: QOMType, ID and Props are sent as given.
type RawObject struct {
	QOMType string
	ID      string
	Props   map[string]any
}

// ObjectArgs implements Object.
func (o RawObject) ObjectArgs() map[string]any {
	m := make(map[string]any, len(o.Props)+2)
	for k, v := range o.Props {
		m[k] = v
	}
	m["qom-type"], m["id"] = o.QOMType, o.ID
	return m
}

// ObjectAdd runs object-add.
func ObjectAdd(ctx context.Context, ex Executor, obj Object) error {
	return Run(ctx, ex, ObjectAddCommand(obj))
}

// ObjectAddCommand is object-add as a Command (for InOrder).
func ObjectAddCommand(obj Object) Command {
	return Command{Name: "object-add", Args: obj.ObjectArgs()}
}

// ObjectDel runs object-del.
func ObjectDel(ctx context.Context, ex Executor, id string) error {
	return ex.Execute(ctx, "object-del", map[string]string{"id": id}, nil)
}

// baseName strips a host directory from a file name property.
func baseName(p string) string {
	if p == "" {
		return ""
	}
	return path.Base(p)
}

// Run executes one Command on ex.
func Run(ctx context.Context, ex Executor, c Command) error {
	return ex.Execute(ctx, c.Name, c.Args, c.Result)
}

// ErrNotRun is InOrder's error for a command it did not send because one before it failed.
var ErrNotRun = errors.New("qmp: not run: an earlier command of the batch failed")

// InOrder runs cmds in order on ex and returns one error per command, nil where it succeeded.
// Where ex can pipeline (Conn.ExecuteInOrder) they go out together and every command runs
// whatever happened to the ones before it; otherwise they run one after another and those
// after a failed one are not run (ErrNotRun).
func InOrder(ctx context.Context, ex Executor, cmds ...Command) []error {
	if p, ok := ex.(interface {
		ExecuteInOrder(context.Context, ...Command) []error
	}); ok {
		return p.ExecuteInOrder(ctx, cmds...)
	}
	errs := make([]error, len(cmds))
	for i, c := range cmds {
		if i > 0 && errs[i-1] != nil {
			errs[i] = ErrNotRun
			continue
		}
		errs[i] = Run(ctx, ex, c)
	}
	return errs
}
