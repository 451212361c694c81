package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNoImage means the test guest has not been built.
var ErrNoImage = errors.New("guest: test guest image not found")

// Image is the guest's kernel (an uncompressed ELF vmlinux) and initramfs.
type Image struct {
	Kernel, Initrd string
}

// Image file names inside the output directory of build.sh.
const (
	KernelFile = "vmlinux"
	InitrdFile = "initrd.cpio.gz"
)

// FindImage locates the built guest: in $MIG2_GUEST_DIR when set, else in
// <module root>/test/guest/out, the module root being the first directory
// holding a go.mod at or above the working directory. The error wraps
// ErrNoImage and says to run `make guest`.
func FindImage() (Image, error) {
	dir := os.Getenv("MIG2_GUEST_DIR")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return Image{}, fmt.Errorf("%w: %v (set MIG2_GUEST_DIR or run `make guest` in the repository)", ErrNoImage, err)
		}
		dir = filepath.Join(root, "test", "guest", "out")
	}
	img := Image{Kernel: filepath.Join(dir, KernelFile), Initrd: filepath.Join(dir, InitrdFile)}
	if err := img.check(); err != nil {
		return Image{}, err
	}
	return img, nil
}

func (img Image) check() error {
	for _, p := range []string{img.Kernel, img.Initrd} {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is missing (run `make guest`)", ErrNoImage, p)
		}
	}
	return nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}
