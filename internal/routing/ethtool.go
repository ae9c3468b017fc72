package routing

import (
	"bytes"
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtool commands (linux/ethtool.h): the legacy GRO switch, and the
// named feature bits.
const (
	ethtoolGGRO      = 0x2b
	ethtoolSGRO      = 0x2c
	ethtoolGStrings  = 0x1b
	ethtoolGSSetInfo = 0x37
	ethtoolSFeatures = 0x3b
	ethSSFeatures    = 4
	ethGStringLen    = 32
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

// ethtoolIoctl passes req (an ethtool command structure) to dev.
func ethtoolIoctl(dev string, req unsafe.Pointer) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:], dev)
	ifr.data = req
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("ethtool %s cmd %#x: %w", dev, *(*uint32)(req), errno)
	}
	return nil
}

func ethtool(dev string, cmd, data uint32) (uint32, error) {
	v := ethtoolValue{cmd: cmd, data: data}
	err := ethtoolIoctl(dev, unsafe.Pointer(&v))
	return v.data, err
}

// innerTunnelGSO are the segmentation offloads for packets that are
// already tunnelled.
var innerTunnelGSO = []string{"tx-gre-segmentation", "tx-gre-csum-segmentation", "tx-ipxip4-segmentation",
	"tx-ipxip6-segmentation", "tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation"}

// segmentationOffloads are every GSO the tunnel interface would otherwise
// hand its veth peer.
var segmentationOffloads = []string{"tx-generic-segmentation", "tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
	"tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation", "tx-udp-segmentation"}

// SetFeatures turns named features (as ethtool -k lists them) on or off;
// names the kernel does not know are skipped.
func SetFeatures(dev string, on bool, names ...string) error {
	info := struct {
		cmd, reserved uint32
		mask          uint64
		count         uint32
	}{cmd: ethtoolGSSetInfo, mask: 1 << ethSSFeatures}
	if err := ethtoolIoctl(dev, unsafe.Pointer(&info)); err != nil {
		return err
	}
	n := info.count
	strs := make([]byte, 12+n*ethGStringLen)
	*(*[3]uint32)(unsafe.Pointer(&strs[0])) = [3]uint32{ethtoolGStrings, ethSSFeatures, n}
	if err := ethtoolIoctl(dev, unsafe.Pointer(&strs[0])); err != nil {
		return err
	}
	blocks := (n + 31) / 32
	set := make([]uint32, 2+2*blocks) // cmd, size, then {valid, requested} per block
	set[0], set[1] = ethtoolSFeatures, blocks
	for i := range n {
		name := strs[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if end := bytes.IndexByte(name, 0); end >= 0 {
			name = name[:end]
		}
		if slices.Contains(names, string(name)) {
			set[2+2*(i/32)] |= 1 << (i % 32)
			if on {
				set[3+2*(i/32)] |= 1 << (i % 32)
			}
		}
	}
	return ethtoolIoctl(dev, unsafe.Pointer(&set[0]))
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
