package qmp_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mig2/mig2/qmp"
)

// A plain-QEMU source: configure, migrate, follow MIGRATION events, and
// switch over only once the caller says so (pause-before-switchover).
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := qmp.Dial(ctx, "/run/mig2/src.qmp")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	events := c.Subscribe(256)
	defer events.Close()
	err = qmp.MigrateSetCapabilities(ctx, c, []qmp.MigrationCapabilityStatus{
		{Capability: qmp.CapEvents, State: true},
		{Capability: qmp.CapMultifd, State: true},
		{Capability: qmp.CapReturnPath, State: true},
		{Capability: qmp.CapPauseBeforeSwitchover, State: true},
	})
	if err == nil {
		err = qmp.MigrateSetParameters(ctx, c, qmp.MigrationParameters{MultifdChannels: new(int64(4))})
	}
	if err == nil {
		err = qmp.Migrate(ctx, c, "tcp:dst.example:49152")
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	for e := range events.Events() {
		m, err := qmp.DecodeMigrationEvent(e)
		if err != nil {
			continue // another event
		}
		switch m.Status {
		case qmp.MigrationPreSwitchover:
			err = qmp.MigrateContinue(ctx, c, qmp.MigrationPreSwitchover)
		case qmp.MigrationFailed, qmp.MigrationCancelled:
			info, _ := qmp.QueryMigrate(ctx, c)
			fmt.Println("migration failed:", info.ErrorDesc)
			return
		case qmp.MigrationCompleted:
			fmt.Println("completed on the source; now ask the destination")
			return
		}
		if err != nil {
			fmt.Println(err)
			return
		}
	}
}

// Only the parameters that are set are sent.
func ExampleMigrateSetParameters() {
	p := qmp.MigrationParameters{MultifdChannels: new(int64(16)), MultifdCompression: new("zstd"), TLSCreds: new("")}
	b, _ := qmp.EncodeCommand("migrate-set-parameters", p, "", false)
	fmt.Print(string(b))
	// Output: {"execute":"migrate-set-parameters","arguments":{"multifd-channels":16,"multifd-compression":"zstd","tls-creds":""}}
}

// QMP errors keep their class.
func ExampleError() {
	_, err := qmp.DecodeReply("x-frobnicate", []byte(`{"id":"1","error":{"class":"CommandNotFound","desc":"The command x-frobnicate has not been found"}}`))
	fmt.Println(err)
	fmt.Println(errors.Is(err, qmp.ErrCommandNotFound), qmp.ErrorClass(err))
	// Output:
	// qmp: x-frobnicate: CommandNotFound: The command x-frobnicate has not been found
	// true CommandNotFound
}

// What a QEMU supports comes from its schema, whose type names are numbers.
func ExampleParseSchema() {
	s, err := qmp.ParseSchema([]byte(`[
		{"name":"migrate-set-capabilities","meta-type":"command","arg-type":"141","ret-type":"0"},
		{"name":"141","meta-type":"object","members":[{"name":"capabilities","type":"[142]"}]},
		{"name":"[142]","meta-type":"array","element-type":"142"},
		{"name":"142","meta-type":"object","members":[{"name":"capability","type":"407"},{"name":"state","type":"bool"}]},
		{"name":"407","meta-type":"enum","members":[{"name":"multifd"},{"name":"zero-copy-send"}]},
		{"name":"MIGRATION","meta-type":"event","arg-type":"146"}
	]`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.MigrationCapabilities(), s.HasCommand("migrate-set-capabilities"), s.HasEvent("MIGRATION"))
	// Output: [multifd zero-copy-send] true true
}
