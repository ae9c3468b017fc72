package routing

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtool commands for the legacy GRO switch (linux/ethtool.h).
const (
	ethtoolGGRO = 0x2b
	ethtoolSGRO = 0x2c
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

func ethtool(dev string, cmd, data uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], dev)
	ifr.data = unsafe.Pointer(&v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, fmt.Errorf("ethtool %s cmd %#x: %w", dev, cmd, errno)
	}
	return v.data, nil
}

// GROEnabled reports the device's GRO setting.
func GROEnabled(dev string) (bool, error) {
	v, err := ethtool(dev, ethtoolGGRO, 0)
	return v != 0, err
}

// SetGRO turns GRO on or off (ethtool -K dev gro on|off).
func SetGRO(dev string, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	_, err := ethtool(dev, ethtoolSGRO, v)
	return err
}
