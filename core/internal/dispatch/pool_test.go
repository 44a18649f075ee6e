package dispatch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// fakePool is a Pool over fake plugins; set changes its members.
type fakePool struct {
	m *pluginv1.Manifest

	mu      sync.Mutex
	members map[string]*fakePlugin
	changed chan struct{}
}

func newFakePool(m *pluginv1.Manifest, members map[string]*fakePlugin) *fakePool {
	return &fakePool{m: m, members: members, changed: make(chan struct{})}
}

func (p *fakePool) Manifest() *pluginv1.Manifest { return p.m }
func (p *fakePool) Service() pluginv1.PluginServiceClient {
	panic("a pool is reached through its members")
}

func (p *fakePool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Member
	for id, f := range p.members {
		out = append(out, Member{ID: id, Service: f.Service()})
	}
	return out
}

func (p *fakePool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func (p *fakePool) set(members map[string]*fakePlugin) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.members = members
	close(p.changed)
	p.changed = make(chan struct{})
}

// seenBy maps each message text to the members that saw it.
func seenBy(members map[string]*fakePlugin) map[string][]string {
	out := map[string][]string{}
	for id, f := range members {
		f.mu.Lock()
		for _, s := range f.seen {
			out[s] = append(out[s], id)
		}
		f.mu.Unlock()
	}
	return out
}

// awaitMembers waits until the session's pool streams to exactly ids (the
// pool follows a membership change asynchronously).
func awaitMembers(t *testing.T, h *harness, ids map[string]*fakePlugin) {
	t.Helper()
	want := make([]string, 0, len(ids))
	for id := range ids {
		want = append(want, id)
	}
	slices.Sort(want)
	p := h.session.st.(*pool)
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("the pool never streamed to %v", want), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return slices.Equal(p.ids, want)
	})
}

// startPool is start with a pool of n fake instances attached instead of one.
func startPool(t *testing.T, n int) (*harness, *fakePool, map[string]*fakePlugin) {
	t.Helper()
	h := start(t, manifest(), 5*time.Second)
	h.route.Detach(h.session)
	h.session.Close()
	members := map[string]*fakePlugin{}
	for i := range n {
		members[fmt.Sprintf("10.0.0.%d:7443", i+1)] = newFakePlugin(t, manifest())
	}
	fp := newFakePool(manifest(), members)
	s, _, err := h.route.Attach(context.Background(), fp)
	if err != nil {
		t.Fatal(err)
	}
	h.session = s
	t.Cleanup(s.Close)
	return h, fp, members
}

// A chat's deliveries all go to one instance, in order, and the chats are
// spread over the instances.
func TestPoolSendsEachChatToOneInstance(t *testing.T) {
	h, _, members := startPool(t, 3)
	const chats, per = 12, 5
	for i := range per {
		for c := range chats {
			h.publish(t, fmt.Sprintf("oc_%d", c), fmt.Sprintf("%d/%d", c, i))
		}
	}
	testenv.Eventually(t, 10*time.Second, "not every event handled", func() bool { return len(h.exec.texts("")) == chats*per })
	seen := seenBy(members)
	used := map[string]bool{}
	for c := range chats {
		chat := fmt.Sprintf("oc_%d", c)
		var want []string
		for i := range per {
			text := fmt.Sprintf("%d/%d", c, i)
			want = append(want, text)
			if got := seen[text]; len(got) != 1 || got[0] != seen[fmt.Sprintf("%d/0", c)][0] {
				t.Errorf("%s went to %v, not to its chat's one instance", text, got)
			}
			used[seen[text][0]] = true
		}
		if got := h.exec.texts(chat); !slices.Equal(got, want) {
			t.Errorf("%s handled as %v, want %v", chat, got, want)
		}
	}
	if len(used) < 2 {
		t.Errorf("12 chats all went to %v", used)
	}
}

// An instance whose stream breaks with a delivery in flight loses nothing:
// the delivery goes to another instance within its claim (no bus
// redelivery), and the chat's later events follow it there.
func TestPoolBrokenInstanceMovesItsChats(t *testing.T) {
	h, _, members := startPool(t, 3)
	h.publish(t, "oc_x", "probe")
	testenv.Eventually(t, 10*time.Second, "probe not handled", func() bool { return len(h.exec.texts("oc_x")) == 1 })
	victim := seenBy(members)["probe"][0]
	held := make(chan struct{})
	t.Cleanup(func() { close(held) })
	released := make(chan struct{})
	close(released)
	for id, f := range members {
		f.mu.Lock()
		if id == victim {
			f.release = held // holds "slow" until the end
		} else {
			f.release = released
		}
		f.mu.Unlock()
	}
	h.publish(t, "oc_x", "slow")
	testenv.Eventually(t, 10*time.Second, "slow not held by its instance", func() bool {
		f := members[victim]
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.outstanding == 1
	})
	_ = members[victim].conn.Close() // the instance goes away mid-delivery
	h.publish(t, "oc_x", "after")
	testenv.Eventually(t, 10*time.Second, "chat did not move on", func() bool { return len(h.exec.texts("oc_x")) == 2 })
	seen := seenBy(members)
	if got := seen["slow"]; len(got) != 2 || !slices.Contains(got, victim) {
		t.Errorf("slow seen by %v: want the victim and one survivor", got)
	}
	if got := seen["after"]; len(got) != 1 || got[0] == victim {
		t.Errorf("after seen by %v: want one survivor", got)
	}
	if n := h.spy.nacks.Load(); n != 0 {
		t.Errorf("%d nacks: the broken instance's delivery went back to the bus", n)
	}
	if got := testenv.MetricValue(t, h.reg, "larkway_dispatch_results_total", "plugin", "fake", "outcome", "done"); got != 3 {
		t.Errorf("done outcomes %v, want 3", got)
	}
	select {
	case <-h.session.Broken():
		t.Fatal("the session broke although two instances serve")
	default:
	}
}

// Instances that join get chats; instances that leave finish what they hold
// and get no more; with none left the session breaks (the supervisor
// reconnects).
func TestPoolMembersComeAndGo(t *testing.T) {
	h, fp, members := startPool(t, 1)
	var only string
	for id := range members {
		only = id
	}
	grown := map[string]*fakePlugin{only: members[only]}
	for i := range 3 {
		grown[fmt.Sprintf("10.0.1.%d:7443", i)] = newFakePlugin(t, manifest())
	}
	fp.set(grown)
	awaitMembers(t, h, grown)
	for c := range 20 {
		h.publish(t, fmt.Sprintf("oc_%d", c), fmt.Sprintf("m%d", c))
	}
	testenv.Eventually(t, 10*time.Second, "not every event handled", func() bool { return len(h.exec.texts("")) == 20 })
	used := map[string]bool{}
	for _, ids := range seenBy(grown) {
		used[ids[0]] = true
	}
	if len(used) < 2 {
		t.Errorf("joined instances got no chats: %v", used)
	}
	fp.set(map[string]*fakePlugin{})
	select {
	case <-h.session.Broken():
	case <-time.After(10 * time.Second):
		t.Fatal("session did not break with no instance left")
	}
}

// An instance that leaves the pool (its address no longer resolves) gets no
// new chats but finishes the delivery it holds, which is not sent again.
func TestPoolLeavingInstanceFinishesWhatItHolds(t *testing.T) {
	h, fp, members := startPool(t, 2)
	h.publish(t, "oc_y", "probe")
	testenv.Eventually(t, 10*time.Second, "probe not handled", func() bool { return len(h.exec.texts("oc_y")) == 1 })
	leaver := seenBy(members)["probe"][0]
	hold := make(chan struct{})
	members[leaver].mu.Lock()
	members[leaver].release = hold
	members[leaver].mu.Unlock()
	h.publish(t, "oc_y", "slow")
	testenv.Eventually(t, 10*time.Second, "slow not held", func() bool {
		f := members[leaver]
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.outstanding == 1
	})
	stay := map[string]*fakePlugin{}
	for id, f := range members {
		if id != leaver {
			stay[id] = f
		}
	}
	fp.set(stay)
	awaitMembers(t, h, stay)
	h.publish(t, "oc_z", "next") // a new chat goes to the remaining instance
	testenv.Eventually(t, 10*time.Second, "next not handled", func() bool { return len(h.exec.texts("oc_z")) == 1 })
	close(hold) // the leaver answers what it held
	testenv.Eventually(t, 10*time.Second, "slow never settled", func() bool {
		return testenv.MetricValue(t, h.reg, "larkway_dispatch_results_total", "plugin", "fake", "outcome", "done") == 3
	})
	seen := seenBy(members)
	if got := seen["slow"]; len(got) != 1 || got[0] != leaver {
		t.Errorf("slow seen by %v: want the leaver alone", got)
	}
	if got := seen["next"]; len(got) != 1 || got[0] == leaver {
		t.Errorf("next seen by %v: want the remaining instance", got)
	}
}
