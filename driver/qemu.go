package driver

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// Version is mig2's version as it reports it to peers; cmd sets it.
var Version = "dev"

// QEMU is a plain-QEMU guest that mig2 reaches through its QMP socket.
type QEMU struct {
	Name   string
	Socket string
	mon    *qmp.Conn
	log    logrus.FieldLogger
}

// OpenQEMU connects to a guest's QMP socket. Only one QMP client can use a socket at a time.
func OpenQEMU(ctx context.Context, name, socket string, log logrus.FieldLogger) (*QEMU, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	log = log.WithField("domain", name)
	mon, err := qmp.Dial(ctx, socket, qmp.WithLogger(log))
	if err != nil {
		return nil, &ConnectError{What: "reach the QMP socket of guest " + name, Err: err}
	}
	return &QEMU{Name: name, Socket: socket, mon: mon, log: log}, nil
}

// Close disconnects from QMP; the guest is not touched.
func (q *QEMU) Close() error { return q.mon.Close() }

// Monitor is the guest's QMP connection.
func (q *QEMU) Monitor() *qmp.Conn { return q.mon }

// QEMUFacts gathers what this host and its QEMU can do (SPEC §4.0 HostFacts): capability names
// from query-migrate-capabilities, parameter names and compression methods from the QMP schema,
// never from a version table. It reads through any QMP executor (a socket, or libvirt's
// pass-through).
// What comes from the QMP schema is cached per QEMU binary (qemucache.go).
func QEMUFacts(ctx context.Context, ex qmp.Executor) (v2proto.HostFacts, error) {
	f, _, err := readFacts(ctx, ex)
	return f, err
}

// readFactsState is QEMUFacts that also reads the QEMU's migration settings, so that applying an
// agreement later sends only what changes (qemuPlan.pending): the capabilities' states come
// with the facts, the parameters in the same pipelined round. st is nil if they were not read.
func readFactsState(ctx context.Context, ex qmp.Executor) (f v2proto.HostFacts, st *migrationState, err error) {
	var (
		caps      []qmp.MigrationCapabilityStatus
		params    qmp.MigrationParameters
		paramsErr error
	)
	err = concurrently(
		func() (err error) { f, caps, err = readFacts(ctx, ex); return err },
		func() error { params, paramsErr = qmp.QueryMigrateParameters(ctx, ex); return nil },
	)
	if err == nil && paramsErr == nil {
		st = &migrationState{Caps: caps, Params: params}
	}
	return f, st, err
}

// readFacts is QEMUFacts that also returns the capabilities' states it read on the way.
func readFacts(ctx context.Context, ex qmp.Executor) (v2proto.HostFacts, []qmp.MigrationCapabilityStatus, error) {
	var (
		ver  qmp.VersionInfo
		caps []qmp.MigrationCapabilityStatus
		bin  binaryFacts
	)
	verErr, capsErr := make(chan error, 1), make(chan error, 1)
	go func() {
		var err error
		ver, err = qmp.QueryVersion(ctx, ex)
		verErr <- err
	}()
	go func() {
		var err error
		caps, err = qmp.QueryMigrateCapabilities(ctx, ex)
		capsErr <- err
	}()
	if err := <-verErr; err != nil {
		<-capsErr
		return v2proto.HostFacts{}, nil, fmt.Errorf("driver: query-version: %w", err)
	}
	proc, known := identifyQEMU(ex)
	key := proc.binaryKey(ver.String())
	if !known || !cacheLoad(key, &bin) {
		schema, err := qmp.QuerySchema(ctx, ex)
		if err != nil {
			<-capsErr
			return v2proto.HostFacts{}, nil, fmt.Errorf("driver: query-qmp-schema: %w", err)
		}
		bin = binaryFacts{Parameters: schema.MigrationParameters(), Compression: schema.CompressionMethods()}
		if known {
			cacheStore(key, bin)
		}
	}
	if err := <-capsErr; err != nil {
		return v2proto.HostFacts{}, nil, fmt.Errorf("driver: query-migrate-capabilities: %w", err)
	}
	f := v2proto.HostFacts{
		Mig2Version: Version,
		QEMUVersion: fmt.Sprintf("%d.%d.%d", ver.QEMU.Major, ver.QEMU.Minor, ver.QEMU.Micro),
		Parameters:  sortedSet(bin.Parameters),
		Compression: sortedSet(bin.Compression),
		Cores:       uint32(runtime.NumCPU()),
		MemoryBytes: hostMemory(),
	}
	for _, c := range caps {
		f.Capabilities = append(f.Capabilities, c.Capability)
	}
	f.Capabilities = sortedSet(f.Capabilities)
	// multifd together with postcopy is a behaviour, not a name in the schema: QEMU 10.1 is the
	// first that accepts both capabilities at once. This is the one version check mig2 makes.
	if ver.AtLeast(10, 1) {
		f.Traits = []string{v2proto.TraitMultifdPostcopy}
	}
	if h, err := os.Hostname(); err == nil {
		f.Hostname = h
	}
	return f, caps, nil
}

func sortedSet(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// hostMemory reads MemTotal from /proc/meminfo; 0 when unknown.
func hostMemory() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// DeviceTree reads the guest's device tree through QOM and converts it to v2proto's form.
func (q *QEMU) DeviceTree(ctx context.Context) (v2proto.DeviceTree, error) {
	t, err := readDeviceTree(ctx, q.mon)
	if err != nil {
		return v2proto.DeviceTree{}, err
	}
	return convertTree(t), nil
}

// convertTree maps QMP's device tree onto the protocol's (SPEC §8.1): a device is identified by
// its id when it has one (QEMU's -device id, libvirt's alias), else by its QOM path; the vCPU
// count and memory backends become entries too, since both must match for a migration to load.
func convertTree(t *qmp.DeviceTree) v2proto.DeviceTree {
	out := v2proto.DeviceTree{
		MachineType: t.MachineType,
		CPUModel:    t.CPUModel,
		RAMBytes:    uint64(t.RAMSize + t.PluggedMemory),
	}
	out.Devices = append(out.Devices, v2proto.Device{
		ID: "cpus", Type: "vcpus", Props: map[string]string{"count": strconv.Itoa(t.CPUs)},
	})
	for _, mb := range t.MemoryBackends {
		out.Devices = append(out.Devices, v2proto.Device{
			ID: "/objects/" + mb.ID, Type: mb.Type, Props: map[string]string{"size": strconv.FormatInt(mb.Size, 10)},
		})
	}
	for _, d := range t.Devices {
		dev := v2proto.Device{ID: d.ID, Type: d.Type, Props: map[string]string{}}
		if dev.ID == "" {
			dev.ID = d.Path
		}
		if d.Bus != "" {
			dev.Props["bus"] = d.Bus
		}
		if d.Addr != "" {
			dev.Props["addr"] = d.Addr
		}
		if d.ROM {
			dev.Props["rom"] = "true"
			if d.ROMFile != "" {
				dev.Props["romfile"] = d.ROMFile
			}
		}
		for k, v := range d.Props {
			dev.Props[k] = jsonScalar(v)
		}
		out.Devices = append(out.Devices, dev)
	}
	slices.SortFunc(out.Devices, func(a, b v2proto.Device) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// jsonScalar renders a QOM property value as QEMU spells it: strings unquoted, the rest as JSON.
func jsonScalar(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// NewMigrationID returns a fresh random id for one migration attempt.
func NewMigrationID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}
