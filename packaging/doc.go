// Package packaging holds what a real host needs to run mig2 beyond the binary: the agent's
// systemd unit (mig2-agent.service, installed by `make install`) and the check that keeps it
// valid. The check runs `systemd-analyze verify` where systemd is installed, and always this
// package's own reading of the unit: its sections, keys and values against what systemd 252
// (Debian 12) accepts, and the hardening the agent is meant to run with.
package packaging
