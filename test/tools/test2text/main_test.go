package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

func TestText(t *testing.T) {
	if os.Getenv("TEST2TEXT_MAIN") == "1" {
		main()
		os.Exit(0) // no test-binary output after main's
	}
	in := `# github.com/x/y
{"Action":"start","Package":"p"}
{"Action":"run","Test":"TestA"}
{"Action":"output","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Test":"TestA","Output":"--- PASS: TestA (0.00s)\n"}
{"Action":"pass","Test":"TestA"}
not json at all
`
	cmd := exec.Command(os.Args[0], "-test.run=^TestText$")
	cmd.Env = append(os.Environ(), "TEST2TEXT_MAIN=1")
	cmd.Stdin = bytes.NewBufferString(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "# github.com/x/y\n=== RUN   TestA\n--- PASS: TestA (0.00s)\nnot json at all\n"
	if string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}
