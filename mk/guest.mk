# mk/guest.mk — the migration test guest (test/guest). Included from the
# top-level Makefile; paths are relative to the repository root.
#
#   make guest        build test/guest/out/vmlinux and test/guest/out/initrd.cpio.gz
#   make guest-deps   install lz4, qemu-system-x86, qemu-utils if missing (Debian, root)
#   make guest-clean  remove the built initrd and kernel (keeps the downloaded .deb)
#
# The kernel is downloaded once (test/guest/out/deb/); the initrd is rebuilt
# when the init program's sources change.

GUEST_DIR  := test/guest
GUEST_OUT  := $(GUEST_DIR)/out
GUEST_INIT_SRCS := $(filter-out %_test.go,$(wildcard \
	$(GUEST_DIR)/initprog/*.go \
	$(GUEST_DIR)/qbline/*.go \
	$(GUEST_DIR)/internal/mkimage/*.go))
GUEST_APT_NEEDS := lz4:lz4 qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils

.PHONY: guest guest-deps guest-clean

guest: $(GUEST_OUT)/vmlinux $(GUEST_OUT)/initrd.cpio.gz

$(GUEST_OUT)/vmlinux: $(GUEST_DIR)/build.sh | guest-deps
	$(GUEST_DIR)/build.sh kernel

$(GUEST_OUT)/initrd.cpio.gz: $(GUEST_INIT_SRCS) $(GUEST_DIR)/build.sh go.mod
	$(GUEST_DIR)/build.sh initrd

guest-deps:
	@missing=; \
	for need in $(GUEST_APT_NEEDS); do \
		command -v $${need%%:*} >/dev/null 2>&1 || missing="$$missing $${need#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "guest: installing$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

guest-clean:
	rm -rf $(GUEST_OUT)/work $(GUEST_OUT)/vmlinux $(GUEST_OUT)/vmlinuz $(GUEST_OUT)/initrd.cpio.gz $(GUEST_OUT)/kernel.txt
