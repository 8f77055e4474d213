//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A netLab is a private network for one test, made of Linux network
// namespaces: a bridge in a namespace of its own, and hosts, each in a
// namespace of its own, joined to the bridge by a veth pair. Hosts have
// the addresses 10.99.0.N/24, which exist only inside these namespaces:
// nothing is added to the root namespace (whose FORWARD policy, once
// dockerd has run, would drop bridged frames) and nothing leaves the
// machine. The test process reaches the hosts by dialing from inside a
// host of its own (see dialFrom).
//
// Faults: cut drops a host's packets to and from some others with a
// classic-BPF tc filter in direct-action mode (tc netem is not on every
// kernel; the gact action module neither); isolate sets the host's port
// on the bridge down. Namespaces are named nsPrefix-<pid>-<seq>-<host>,
// and removed, with every process still in them killed, when the test
// ends, whether it passed or not.
type netLab struct {
	t      *testing.T
	prefix string // of every namespace of this lab
	bridge string // the bridge's namespace
	hosts  []*netHost
}

// A netHost is one namespace of a netLab.
type netHost struct {
	name string // the host's name in the lab, e.g. h1
	ns   string // its namespace
	ip   string // its address, 10.99.0.N
	port string // its veth in the bridge's namespace
}

// nsPrefix starts the name of every namespace the tests make.
const nsPrefix = "cmt"

// labSeq numbers the labs of one test process.
var labSeq atomic.Int64

// faultTestsRequired makes the tests that need namespaces fail, rather
// than skip, when namespaces cannot be made (set in CI, which runs as
// root).
func faultTestsRequired() bool { return os.Getenv("COMET_FAULT_TESTS") == "1" }

// newNetLab makes an empty lab with its bridge, or skips the test when
// namespaces cannot be made here (not root, no iproute2): it fails
// instead when COMET_FAULT_TESTS=1.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	needBinary(t)
	cannot := func(format string, args ...any) {
		t.Helper()
		msg := "network namespaces cannot be made here: " + fmt.Sprintf(format, args...)
		if faultTestsRequired() {
			t.Fatal(msg + " (COMET_FAULT_TESTS=1 requires them)")
		}
		t.Skip(msg + "; run as root with iproute2 (ip, tc) installed")
	}
	if os.Geteuid() != 0 {
		cannot("not root")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			cannot("no %s command (install iproute2)", tool)
		}
	}
	removeStaleNamespaces(t)
	l := &netLab{t: t, prefix: fmt.Sprintf("%s-%d-%d", nsPrefix, os.Getpid(), labSeq.Add(1))}
	l.bridge = l.prefix + "-br"
	// Registered before any namespace exists, so that it runs last: after
	// the cleanups of what the test starts in the lab.
	t.Cleanup(l.remove)
	if out, err := ipCmd("netns", "add", l.bridge); err != nil {
		cannot("ip netns add: %v: %s", err, out)
	}
	l.must("ip", "-n", l.bridge, "link", "add", "br0", "type", "bridge")
	l.must("ip", "-n", l.bridge, "link", "set", "br0", "up")
	return l
}

// ipCmd runs ip with args and returns its combined output.
func ipCmd(args ...string) (string, error) {
	return runTool("ip", args...)
}

// runTool runs a network tool for at most 10 s.
func runTool(tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// must runs a network tool and fails the test if it fails.
func (l *netLab) must(tool string, args ...string) {
	l.t.Helper()
	if out, err := runTool(tool, args...); err != nil {
		l.t.Fatalf("%s %s: %v: %s", tool, strings.Join(args, " "), err, out)
	}
}

// addHost adds a host named name with the address 10.99.0.n (1 to 254).
func (l *netLab) addHost(name string, n int) *netHost {
	l.t.Helper()
	h := &netHost{name: name, ns: l.prefix + "-" + name, ip: fmt.Sprintf("10.99.0.%d", n), port: fmt.Sprintf("p%d", n)}
	l.hosts = append(l.hosts, h)
	l.must("ip", "netns", "add", h.ns)
	// Both ends are made inside the namespaces: no name is ever taken in
	// the root namespace.
	l.must("ip", "-n", l.bridge, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	l.must("ip", "-n", l.bridge, "link", "set", h.port, "master", "br0", "up")
	l.must("ip", "-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
	l.must("ip", "-n", h.ns, "link", "set", "eth0", "up")
	l.must("ip", "-n", h.ns, "link", "set", "lo", "up")
	l.must("tc", "-n", h.ns, "qdisc", "add", "dev", "eth0", "clsact")
	return h
}

// addr is host:port on h.
func (h *netHost) addr(port int) string { return net.JoinHostPort(h.ip, strconv.Itoa(port)) }

// wrap is the command that runs a program inside h's namespace (as hub.wrap):
// the program keeps the process, since ip netns exec execs it.
func (h *netHost) wrap() []string { return []string{"ip", "netns", "exec", h.ns} }

// cut drops every IPv4 packet between h and the given hosts, both ways,
// until heal; h still reaches every other host.
func (l *netLab) cut(h *netHost, from ...*netHost) {
	l.t.Helper()
	var ips []string
	for _, o := range from {
		ips = append(ips, o.ip)
	}
	prog, err := dropIPv4(ips)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, dir := range []string{"ingress", "egress"} {
		l.must("tc", "-n", h.ns, "filter", "add", "dev", "eth0", dir, "bpf", "da", "bytecode", prog)
	}
}

// heal removes every cut of h.
func (l *netLab) heal(h *netHost) {
	l.t.Helper()
	for _, dir := range []string{"ingress", "egress"} {
		l.must("tc", "-n", h.ns, "filter", "del", "dev", "eth0", dir)
	}
}

// isolate cuts h off from every other host by setting its port on the
// bridge down; rejoin sets it up again.
func (l *netLab) isolate(h *netHost) {
	l.t.Helper()
	l.must("ip", "-n", l.bridge, "link", "set", h.port, "down")
}

func (l *netLab) rejoin(h *netHost) {
	l.t.Helper()
	l.must("ip", "-n", l.bridge, "link", "set", h.port, "up")
}

// dropIPv4 returns, in tc's bytecode syntax, a classic BPF program for a
// direct-action filter on an Ethernet device: it answers TC_ACT_SHOT (2,
// drop) for an IPv4 packet whose source or destination is one of ips, and
// TC_ACT_OK (0) for anything else.
func dropIPv4(ips []string) (string, error) {
	if len(ips) == 0 || len(ips) > 100 {
		return "", fmt.Errorf("dropIPv4: %d addresses, want 1 to 100", len(ips))
	}
	var keys []uint32
	for _, s := range ips {
		ip := net.ParseIP(s).To4()
		if ip == nil {
			return "", fmt.Errorf("dropIPv4: %q is not an IPv4 address", s)
		}
		keys = append(keys, uint32(ip[0])<<24|uint32(ip[1])<<16|uint32(ip[2])<<8|uint32(ip[3]))
	}
	const (
		ldh  = 0x28 // BPF_LD|BPF_H|BPF_ABS
		ldw  = 0x20 // BPF_LD|BPF_W|BPF_ABS
		jeq  = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
		ret  = 0x06 // BPF_RET|BPF_K
		pass = 0    // TC_ACT_OK
		drop = 2    // TC_ACT_SHOT
	)
	type insn struct {
		code   uint16
		jt, jf uint8
		k      uint32
	}
	// Layout: ethertype check, the source compared with each key, the
	// destination compared with each key, pass, drop.
	n := len(keys)
	total := 2 + 2*(1+n) + 2
	passAt, dropAt := total-2, total-1
	var prog []insn
	jump := func(from, to int) uint8 { return uint8(to - from - 1) }
	prog = append(prog, insn{ldh, 0, 0, 12})
	prog = append(prog, insn{jeq, 0, jump(1, passAt), 0x0800})
	for _, off := range []uint32{26, 30} { // IPv4 source, destination
		prog = append(prog, insn{ldw, 0, 0, off})
		for _, k := range keys {
			at := len(prog)
			prog = append(prog, insn{jeq, jump(at, dropAt), 0, k})
		}
	}
	prog = append(prog, insn{ret, 0, 0, pass}, insn{ret, 0, 0, drop})
	parts := []string{strconv.Itoa(len(prog))}
	for _, in := range prog {
		parts = append(parts, fmt.Sprintf("%d %d %d %d", in.code, in.jt, in.jf, in.k))
	}
	return strings.Join(parts, ","), nil
}

// dialFrom returns a DialContext that makes its connections inside h's
// namespace: the socket is created by a thread that has joined the
// namespace for the time of the dial, and stays in it.
func (l *netLab) dialFrom(h *netHost) func(ctx context.Context, network, addr string) (net.Conn, error) {
	path := "/var/run/netns/" + h.ns
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			conn net.Conn
			err  error
		}
		ch := make(chan result, 1)
		go func() {
			// The thread is given back only once it is in its own
			// namespace again; otherwise it ends with this goroutine.
			runtime.LockOSThread()
			conn, back, err := dialInNetns(ctx, path, network, addr)
			if back {
				runtime.UnlockOSThread()
			}
			ch <- result{conn, err}
		}()
		r := <-ch
		return r.conn, r.err
	}
}

// dialInNetns dials from the namespace at path on the current (locked)
// thread, and reports whether the thread is back in its own namespace.
func dialInNetns(ctx context.Context, path, network, addr string) (net.Conn, bool, error) {
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer own.Close()
	target, err := os.Open(path)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := setns(target); err != nil {
		return nil, true, fmt.Errorf("setns %s: %w", path, err)
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, dialErr := d.DialContext(ctx, network, addr)
	if err := setns(own); err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, false, fmt.Errorf("setns back: %w", err)
	}
	return conn, true, dialErr
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

// remove kills every process left in the lab's namespaces and deletes
// them (which deletes their veths and the bridge).
func (l *netLab) remove() {
	names := []string{l.bridge}
	for _, h := range l.hosts {
		names = append(names, h.ns)
	}
	for _, ns := range names {
		if err := deleteNamespace(ns); err != nil {
			l.t.Errorf("removing namespace %s: %v", ns, err)
		}
	}
}

// deleteNamespace kills the processes in ns and deletes it.
func deleteNamespace(ns string) error {
	if out, err := ipCmd("netns", "pids", ns); err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if out, err := ipCmd("netns", "del", ns); err != nil && !strings.Contains(out, "No such file") {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// removeStaleNamespaces deletes the namespaces of test processes that are
// gone (killed before their cleanups could run).
func removeStaleNamespaces(t *testing.T) {
	out, err := ipCmd("netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		parts := strings.SplitN(f[0], "-", 3)
		if len(parts) < 3 || parts[0] != nsPrefix {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
			continue // its test process is still running
		}
		if err := deleteNamespace(f[0]); err != nil {
			t.Logf("removing stale namespace %s: %v", f[0], err)
		}
	}
}
