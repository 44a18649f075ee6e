// Package embedded is the durable single-machine bus: an append-only log in a
// local directory that keeps every acknowledged event through a process
// crash, an OOM kill or a reboot, without a broker. It passes the same
// conformance suite as bus/memory and bus/pulsar (bus/bustest).
//
// It is built on Pebble (github.com/cockroachdb/pebble/v2), CockroachDB's
// LSM storage engine, rather than on a hand-written segment format or bbolt:
//
//   - Publish commits one batch with pebble.Sync: the batch is in the
//     write-ahead log and fsynced before Publish returns nil, so ingest
//     acknowledges Lark only for stored events.
//   - Group commit comes with it. Pebble's commit pipeline writes batches to
//     the WAL in order under one mutex and syncs in a separate loop; every
//     batch queued while a sync is under way is covered by the next sync
//     (see "commitPipeline" in pebble's commit.go and LogWriter's flushLoop
//     in record/log_writer.go). Concurrent publishes therefore share fsyncs,
//     where bbolt's single writer fsyncs (twice) per transaction unless
//     callers batch by hand.
//   - Recovery: every WAL chunk and sstable block carries a checksum. Pebble
//     replays the WAL on open, drops a torn tail of the last WAL (a write
//     cut short by the crash, never acknowledged) and reports corruption
//     elsewhere with the file and offset; Open reads every record, so a bad
//     sstable block stops it too. One limit: WAL chunks carry the offset
//     synced so far, which is how a later chunk proves an earlier bad one
//     was no torn tail, and Pebble looks for such chunks only in the blocks
//     after the bad one, so a flipped byte in the newest WAL's last 32 KiB
//     block reads as a torn tail.
//   - Deleting a range of fully consumed messages is one range tombstone;
//     Pebble's delete-only compactions then drop the sstables it covers
//     whole, the "segments deleted once every subscription is past them".
//
// Layout (see codec.go): a message record per (topic, seq), and a pending
// record per (topic, subscription, seq) that exists until the subscription
// acknowledges the message; it holds the delivery count and the redelivery
// time. Both are written in the publish's batch, so a message is stored for
// exactly the subscriptions that existed when it was published.
//
// Semantics, those of bus/memory (read its package doc) made durable:
//
//   - Publish returns nil only after the fsync. A topic without
//     subscriptions still stores the message, as history for Replay.
//   - A new subscription starts at the latest position; subscriptions and
//     their positions survive restarts (there is no unsubscribe).
//   - Key_Shared: consumers of a subscription split the keys; a key's
//     messages reach one consumer in publish order, and a key with a message
//     in flight stays with its consumer.
//   - Delivery counts survive a crash, so a message that crashes the
//     process still reaches MaxDeliveries: a redelivery persists its count
//     before the message is returned, and a first delivery is counted at
//     recovery instead (one write per event less): after a crash (no clean
//     Close), every recovered message not yet counted is counted as
//     delivered once, whether or not it was. Close persists the counts of
//     first deliveries that were handed out and not settled. Nack persists
//     the count and the redelivery time (SubscribeOptions.BackoffFor).
//     After MaxDeliveries, a Nack moves the message to the dead-letter topic
//     (key, payload and properties kept, as bus/memory does) and removes it
//     from the subscription in one batch.
//   - Acks are deferred: an ack's delete rides on the store's next write
//     (a publish, a dedup marker, a redelivery count), or the periodic sync
//     (SyncInterval), or Close, so it costs no commit of its own. Redelivery
//     counts and state keys are written at once without their own fsync:
//     a process crash loses none of them once Pebble handed them to the
//     kernel (within microseconds). A crash loses the deferred acks not yet
//     written, and a machine crash the last SyncInterval's writes. An ack
//     lost means one more delivery of an event already handled, which the
//     dispatcher's dedup store acknowledges without running the handler
//     again: the bus is at-least-once, end to end delivery exactly once.
//   - Retention: a message every subscription has acknowledged is history;
//     history older than Config.RetentionAge, or beyond Config.RetentionBytes
//     per topic (oldest first), is deleted. A message some subscription has
//     not acknowledged is never deleted: the disk is its only bound.
//   - A full disk: Publish fails with bus.ErrUnavailable (ingest answers 503
//     and Lark retries) while the disk holding Dir has less than
//     Config.MinFreeBytes free. Pebble treats a failed WAL write as fatal and
//     exits the process; the reserve keeps writes from getting there, and
//     leaves room for compactions, which free space.
package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	crerrors "github.com/cockroachdb/errors"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	dto "github.com/prometheus/client_model/go"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/bus/internal/keyshared"
)

var (
	_ bus.Bus        = (*Bus)(nil)
	_ bus.Backlogger = (*Bus)(nil)
)

// Defaults for Config's zero fields.
const (
	DefaultRetentionAge      = 24 * time.Hour
	DefaultRetentionBytes    = 1 << 30
	DefaultMinFreeBytes      = 256 << 20
	DefaultRetentionInterval = time.Minute
	DefaultMemoryWindow      = 10_000
)

// blockCacheBytes is Pebble's block cache: hand-outs read back messages
// published moments before, from the memtable or recently flushed tables.
const (
	blockCacheBytes = 32 << 20
	memTableBytes   = 16 << 20
)

// walMinSyncInterval spaces the WAL's fsyncs: publishes arriving within it
// share the next one. Without it the log synced as soon as the previous
// sync ended, ~1 700 times a second under the ingest benchmark, five
// publishes per fsync, and each fsync costs CPU on top of its wait; with
// 500 µs (the value Pebble's documentation of the option suggests) half
// as many fsyncs carried the same publishes, ingest rose by a tenth, and
// the acknowledgement's p50 and p99 did not grow.
const walMinSyncInterval = 500 * time.Microsecond

// Config configures the embedded bus. Zero fields take the defaults above.
type Config struct {
	// Dir holds the store; it is created if missing. Required.
	Dir string
	// RetentionAge is how long history (messages every subscription has
	// acknowledged) is kept for Replay.
	RetentionAge time.Duration
	// RetentionBytes bounds each topic's history; the oldest goes first.
	RetentionBytes int64
	// MinFreeBytes is the free disk below which Publish fails with
	// bus.ErrUnavailable.
	MinFreeBytes int64
	// RetentionInterval is how often retention runs.
	RetentionInterval time.Duration
	// MemoryWindow is how many of a subscription's pending messages are
	// held in memory (about 200 bytes each; up to twice as many while its
	// consumers catch up); the rest wait on disk only and are read back in
	// order as the window empties, so memory stays flat however deep a
	// backlog grows (spill.go).
	MemoryWindow int
	// FS replaces the operating system's file system (tests).
	FS vfs.FS
}

func (c Config) withDefaults() Config {
	if c.RetentionAge == 0 {
		c.RetentionAge = DefaultRetentionAge
	}
	if c.RetentionBytes == 0 {
		c.RetentionBytes = DefaultRetentionBytes
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = DefaultMinFreeBytes
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = DefaultRetentionInterval
	}
	if c.MemoryWindow == 0 {
		c.MemoryWindow = DefaultMemoryWindow
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	return c
}

// Validate reports the first invalid field of c.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("embedded bus: Dir is required")
	case c.RetentionAge < 0 || c.RetentionBytes < 0 || c.MinFreeBytes < 0 || c.RetentionInterval < 0:
		return errors.New("embedded bus: retention and free-space limits must not be negative")
	case c.MemoryWindow < 0:
		return errors.New("embedded bus: MemoryWindow must not be negative")
	}
	return nil
}

// Bus is the embedded durable bus. The zero value is not usable; call Open.
type Bus struct {
	cfg    Config
	logger *slog.Logger
	seed   maphash.Seed
	now    func() time.Time

	// db is the store. dbMu guards its closing: every use holds it for
	// reading and checks dbClosed, so nothing touches a closed DB.
	db       *pebble.DB
	dbMu     sync.RWMutex
	dbClosed bool

	// mu is held for reading by every Publish for its whole duration, so
	// that no publish completes after Close returns, and for writing while
	// retention takes the topics' floors.
	// Lock order: Bus.mu, then Bus.tmu, then topic.mu, then subscription.mu.
	mu     sync.RWMutex
	closed bool

	tmu       sync.Mutex // guards the maps and nextID
	topics    map[string]*topic
	consumers map[*consumer]struct{}
	nextID    uint64

	lowDisk atomic.Bool // the last free-space check failed (for logs)
	// space: the last successful free-space check (Unix ns) and the
	// publishes and payload bytes since (publishSpace).
	spaceAt    atomic.Int64
	spaceN     atomic.Int64
	spaceBytes atomic.Int64
	dirty      atomic.Bool  // a write since the last periodic sync was not fsynced
	heldBytes  atomic.Int64 // records held in memory (holdRecord)

	// deferred holds writes that ride on the next commit (acks); nil when
	// empty. Guarded by deferMu.
	deferMu  sync.Mutex
	deferred *pebble.Batch

	stop chan struct{} // closed by Close: retention stops
	bg   sync.WaitGroup
	// refillMu guards noRefills, set by Close before it waits for bg: a
	// refill starts (bg.Add) only before. A leaf lock.
	refillMu  sync.Mutex
	noRefills bool
	closeDone chan struct{}
}

// Open opens (or creates) the store in cfg.Dir and recovers its topics,
// subscriptions and pending messages. It starts one goroutine, for
// retention, which Close stops. A corrupt store is an error naming the file
// and offset where the corruption was found.
func Open(cfg Config, logger *slog.Logger) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "bus.embedded")
	opts := &pebble.Options{FS: cfg.FS, Logger: pebbleLogger{logger},
		// WAL chunks then carry the offset synced so far, which lets
		// recovery tell a flipped byte (a later chunk says it was synced)
		// from a torn tail: without it Pebble takes both for the log's end.
		FormatMajorVersion: pebble.FormatWALSyncChunks,
		EventListener: &pebble.EventListener{
			// Pebble's default exits the process on corruption; the read that
			// found it fails with an error naming the file and block, which
			// Open or the delivery reports.
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				logger.Error("on-disk corruption", "path", info.Path, "err", info.Details.Error())
			},
		}}
	// Bloom filters: the dedup and nonce look-ups beside the bus are mostly
	// for keys that do not exist, which without a filter read a block of
	// every overlapping sstable.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// A larger memtable than the 4 MB default: a message's pending, lease
	// and ack records mostly come and go within one, so flushes and
	// compactions carry less of them.
	opts.MemTableSize = memTableBytes
	opts.WALMinSyncInterval = func() time.Duration { return walMinSyncInterval }
	cache := pebble.NewCache(blockCacheBytes)
	defer cache.Unref() // the DB holds its own reference
	opts.Cache = cache
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("opening embedded bus in %s: %w", cfg.Dir, withDetails(err))
	}
	// The clean-close marker says whether first deliveries were counted on
	// disk (see Close); it is deleted before anything is handed out, and
	// the flush below makes the deletion durable.
	clean, err := takeCleanMarker(db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening embedded bus in %s: %w", cfg.Dir, withDetails(err))
	}
	// A new store's first WAL is created before Pebble ratchets the format
	// up to FormatWALSyncChunks, so it lacks the sync offsets (and a
	// flipped byte in it would read as the log's end): a flush starts a
	// new WAL in the current format. After a restart it is cheap (the
	// replayed WAL was flushed by Open).
	if err := db.Flush(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening embedded bus in %s: rotating the WAL: %w", cfg.Dir, err)
	}
	b := &Bus{
		cfg:       cfg,
		logger:    logger,
		seed:      maphash.MakeSeed(),
		now:       time.Now,
		db:        db,
		topics:    make(map[string]*topic),
		consumers: make(map[*consumer]struct{}),
		stop:      make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	if err := b.recover(clean); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("recovering embedded bus in %s: %w", cfg.Dir, err)
	}
	b.bg.Add(2)
	go b.retentionLoop()
	go b.syncLoop()
	return b, nil
}

// withDetails appends the details Pebble attaches to err (for corruption:
// the WAL or sstable and the offset), which its Error() leaves out.
func withDetails(err error) error {
	if info := pebble.ExtractDataCorruptionInfo(err); info != nil {
		// Error() of Pebble's joined carrier adds a line of noise: report
		// the corruption itself, with the file.
		return fmt.Errorf("%w (in %s)", info.Details, info.Path)
	}
	details := crerrors.GetAllDetails(err)
	if len(details) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(details, "; "))
}

type topic struct {
	name string

	mu   sync.Mutex
	seq  uint64 // the last seq assigned
	low  uint64 // the last seq retention deleted
	subs map[string]*subscription
	// inflight: seqs assigned whose publish has not yet reached the
	// subscriptions (a refill reads no further than the lowest).
	inflight map[uint64]struct{}
	done     uint64 // the highest seq whose publish reached the subscriptions

	histBytes atomic.Int64 // stored bytes of messages no subscription holds
}

// message is what the subscriptions of a stored message share in memory:
// the record itself stays on disk until a hand-out reads it.
type message struct {
	t    *topic
	seq  uint64
	id   string
	key  string
	size int64
	refs atomic.Int32 // subscriptions still holding it
	// rec is the stored record while the bus holds it in memory too
	// (holdRecord), so a hand-out need not read it back; nil otherwise.
	rec atomic.Pointer[[]byte]
}

func newMessage(t *topic, seq uint64, key string, size int64) *message {
	return &message{t: t, seq: seq, id: strconv.FormatUint(seq, 10), key: key, size: size}
}

// drop releases one subscription's hold on m: once none holds it, it is
// history.
func (m *message) drop(b *Bus) {
	if m.refs.Add(-1) == 0 {
		m.t.histBytes.Add(m.size)
		b.releaseRecord(m)
	}
}

// recordBytes bounds the records held in memory beside the store (all
// subscriptions together): at 1–2 KB an event, a few thousand, which is
// the backlog of a pipeline keeping up; deeper backlogs read the rest back.
// Reading a record back was a tenth of the embedded bus's CPU per event
// under sustained load (Pebble's Get: a memtable and level search).
const recordBytes = 8 << 20

// holdRecord keeps rec in memory with m while the bus holds under
// recordBytes of them; a record the caller does not own (Pebble reuses the
// buffers it returns) is copied.
func (b *Bus) holdRecord(m *message, rec []byte, owned bool) {
	if b.heldBytes.Add(int64(len(rec))) > recordBytes {
		b.heldBytes.Add(-int64(len(rec)))
		return
	}
	if !owned {
		rec = bytes.Clone(rec)
	}
	m.rec.Store(&rec)
}

// releaseRecord drops m's record from memory, if held.
func (b *Bus) releaseRecord(m *message) {
	if r := m.rec.Swap(nil); r != nil {
		b.heldBytes.Add(-int64(len(*r)))
	}
}

// topicFor returns the named topic, creating it in memory if needed.
func (b *Bus) topicFor(name string) *topic {
	b.tmu.Lock()
	defer b.tmu.Unlock()
	t := b.topics[name]
	if t == nil {
		t = &topic{name: name, subs: make(map[string]*subscription), inflight: make(map[uint64]struct{})}
		b.topics[name] = t
	}
	return t
}

// write commits batch, with an fsync when sync, and the deferred writes
// before it.
func (b *Bus) write(batch *pebble.Batch, sync bool) error {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return bus.ErrClosed
	}
	if d := b.takeDeferred(); d != nil {
		// The deferred writes were made first: they go first. A failed
		// commit loses them, like a crash would: they are acks, and an
		// ack lost is one more delivery, absorbed by the dedup store.
		defer d.Close()
		if err := d.Apply(batch, nil); err != nil {
			return fmt.Errorf("%w: %w", bus.ErrUnavailable, err)
		}
		batch = d
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	} else {
		b.dirty.Store(true)
	}
	if err := batch.Commit(opts); err != nil {
		return fmt.Errorf("%w: %w", bus.ErrUnavailable, err)
	}
	return nil
}

// deferLimit is how many deferred writes wait at most: past it, the one
// that deferred them commits them.
const deferLimit = 1024

// writeDeferred adds op's writes to the next commit. Use it only for writes
// whose loss in a crash is harmless (acks) and that nothing reads back
// before they are committed.
func (b *Bus) writeDeferred(op func(*pebble.Batch)) error {
	b.deferMu.Lock()
	if b.deferred == nil {
		b.deferred = b.db.NewBatch()
	}
	op(b.deferred)
	full := b.deferred.Count() >= deferLimit
	b.deferMu.Unlock()
	b.dirty.Store(true)
	if !full {
		return nil
	}
	return b.flushDeferred(false)
}

// takeDeferred returns the deferred writes, leaving none, or nil.
func (b *Bus) takeDeferred() *pebble.Batch {
	b.deferMu.Lock()
	defer b.deferMu.Unlock()
	d := b.deferred
	b.deferred = nil
	return d
}

// flushDeferred commits the deferred writes, if any, on their own.
func (b *Bus) flushDeferred(sync bool) error {
	b.deferMu.Lock()
	none := b.deferred == nil
	b.deferMu.Unlock()
	if none {
		return nil
	}
	empty := b.db.NewBatch()
	defer empty.Close()
	return b.write(empty, sync)
}

// SyncInterval bounds how long a write made without its own fsync (an ack,
// a redelivery count, a dedup marker) stays unsynced when no publish syncs
// it first: what a machine crash can lose of them, and how long an ack
// waits for another write to ride on.
const SyncInterval = 100 * time.Millisecond

// syncLoop fsyncs the WAL every SyncInterval while unsynced writes wait.
func (b *Bus) syncLoop() {
	defer b.bg.Done()
	tick := time.NewTicker(SyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			if err := b.flushDeferred(false); err != nil && !errors.Is(err, bus.ErrClosed) {
				b.logger.Warn("writing deferred acknowledgements failed", "err", err)
			}
			if b.dirty.Swap(false) {
				if err := b.db.LogData(nil, pebble.Sync); err != nil {
					b.logger.Warn("syncing the WAL failed", "err", err)
				}
			}
		}
	}
}

// message returns m's message from the record held in memory, or else
// from the store.
func (b *Bus) message(topic string, m *message) (bus.Message, time.Time, error) {
	if r := m.rec.Load(); r != nil {
		return decodeMessage(*r)
	}
	return b.load(topic, m.seq)
}

// load reads message seq of topic.
func (b *Bus) load(topic string, seq uint64) (bus.Message, time.Time, error) {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return bus.Message{}, time.Time{}, bus.ErrClosed
	}
	v, closer, err := b.db.Get(messageKey(topic, seq))
	if err != nil {
		return bus.Message{}, time.Time{}, fmt.Errorf("reading message %d of %s: %w", seq, topic, withDetails(err))
	}
	defer closer.Close()
	m, published, err := decodeMessage(v)
	if err != nil {
		return bus.Message{}, time.Time{}, fmt.Errorf("decoding message %d of %s: %w", seq, topic, err)
	}
	return m, published, nil
}

// checkSpace fails when the disk holding the store is nearly full.
func (b *Bus) checkSpace() error {
	du, err := b.cfg.FS.GetDiskUsage(b.cfg.Dir)
	if err != nil {
		return fmt.Errorf("checking free disk space: %w: %w", bus.ErrUnavailable, err)
	}
	if int64(du.AvailBytes) < b.cfg.MinFreeBytes {
		if !b.lowDisk.Swap(true) {
			b.logger.Error("disk nearly full: refusing publishes until space is freed",
				"dir", b.cfg.Dir, "free_bytes", du.AvailBytes, "min_free_bytes", b.cfg.MinFreeBytes)
		}
		return fmt.Errorf("%d bytes free in %s, below the %d reserved: %w", du.AvailBytes, b.cfg.Dir, b.cfg.MinFreeBytes, bus.ErrUnavailable)
	}
	if b.lowDisk.Swap(false) {
		b.logger.Info("disk space recovered: accepting publishes", "dir", b.cfg.Dir, "free_bytes", du.AvailBytes)
	}
	return nil
}

// Between free-space checks a publish writes at most spaceCheckN
// publishes' or spaceCheckBytes of payload, or spaceCheckEvery's worth:
// far below the reserve (DefaultMinFreeBytes), and one statfs per publish
// was 1.75 % of the embedded core's CPU under load.
const (
	spaceCheckN     = 64
	spaceCheckBytes = 1 << 20
	spaceCheckEvery = 100 * time.Millisecond
)

// publishSpace is checkSpace for a publish of n payload bytes, reusing a
// recent successful check.
func (b *Bus) publishSpace(n int) error {
	if at := b.spaceAt.Load(); at != 0 && !b.lowDisk.Load() &&
		b.spaceN.Add(1) <= spaceCheckN && b.spaceBytes.Add(int64(n)) <= spaceCheckBytes &&
		time.Since(time.Unix(0, at)) < spaceCheckEvery {
		return nil
	}
	if err := b.checkSpace(); err != nil {
		return err
	}
	b.spaceN.Store(0)
	b.spaceBytes.Store(0)
	b.spaceAt.Store(time.Now().UnixNano())
	return nil
}

var _ bus.Admitter = (*Bus)(nil)

// lowDiskWait is what Room returns while the disk is nearly full: no
// acknowledgement frees disk at once (compactions do, later), so a waiter
// waits out its bound and is refused.
var lowDiskWait = make(chan struct{})

// Room implements bus.Admitter. The bus's bound is its disk: while the
// last publish found the disk below MinFreeBytes, Room checks again and,
// still short, refuses before ingest verifies anything.
func (b *Bus) Room() <-chan struct{} {
	if !b.lowDisk.Load() || b.checkSpace() == nil {
		return nil
	}
	return lowDiskWait
}

// Publish stores msg and returns once it is fsynced.
func (b *Bus) Publish(ctx context.Context, topicName string, msg bus.Message) error {
	if err := b.publish(ctx, topicName, msg, nil); err != nil {
		return fmt.Errorf("publishing to %s: %w", topicName, err)
	}
	return nil
}

// publish stores msg in topicName for its current subscriptions, with
// whatever extra adds to the same batch, and hands it to them once fsynced.
func (b *Bus) publish(ctx context.Context, topicName string, msg bus.Message, extra func(*pebble.Batch)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if topicName == "" {
		return errors.New("empty topic")
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return bus.ErrClosed
	}
	if err := b.publishSpace(len(msg.Payload)); err != nil {
		return err
	}
	t := b.topicFor(topicName)
	t.mu.Lock()
	t.seq++
	seq := t.seq
	subs := slices.Collect(maps.Values(t.subs))
	t.inflight[seq] = struct{}{}
	t.mu.Unlock()

	rec := encodeMessage(msg, b.now())
	batch := b.db.NewBatch()
	defer batch.Close()
	_ = batch.Set(messageKey(topicName, seq), rec, nil)
	fresh := encodePending(pending{})
	for _, s := range subs {
		_ = batch.Set(pendingKey(topicName, s.name, seq), fresh, nil)
	}
	if extra != nil {
		extra(batch)
	}
	err := b.write(batch, true)
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.inflight, seq)
	defer func() { t.done = max(t.done, seq) }() // after keep decided (spill.go)
	if err != nil {
		// Nothing was handed out; the seq stays unused (a gap is harmless).
		return err
	}

	m := newMessage(t, seq, msg.Key, int64(len(rec)))
	if len(subs) == 0 {
		t.histBytes.Add(m.size)
		return nil
	}
	// Under t.mu, with the seq no longer in flight: a refill either has
	// read it from disk or leaves it to this (spill.go). A subscription
	// that spills it reads it back as its own message and counts its
	// bytes as history then; this one drops the spilling subscriptions'
	// holds without counting (a hold dropped last may leave the bytes
	// counted twice or not by this copy: retention by size is
	// approximate then, and never deletes a pending message).
	m.refs.Store(int32(len(subs)))
	b.holdRecord(m, rec, true)
	for _, s := range subs {
		s.mu.Lock()
		if b.keep(s, seq) {
			s.ks.Offer(&entry{M: m})
		} else {
			m.refs.Add(-1)
		}
		s.mu.Unlock()
	}
	if m.refs.Load() == 0 { // every subscription spilled it
		b.releaseRecord(m)
	}
	return nil
}

// Subscribe opens a consumer on opts.Subscription, creating the subscription
// (durably) at the topic's latest position if it does not exist.
func (b *Bus) Subscribe(ctx context.Context, opts bus.SubscribeOptions) (bus.Consumer, error) {
	if err := keyshared.CheckSubscribe(ctx, opts); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, fmt.Errorf("subscribing to %s: %w", opts.Topic, bus.ErrClosed)
	}
	t := b.topicFor(opts.Topic)
	t.mu.Lock()
	s := t.subs[opts.Subscription]
	if s == nil {
		// Written under t.mu: a publish either took its seq before (and is
		// not for s) or sees s and writes s's pending record with it.
		batch := b.db.NewBatch()
		_ = batch.Set(subscriptionKey(opts.Topic, opts.Subscription), encodeSeq(t.seq), nil)
		err := b.write(batch, true)
		_ = batch.Close()
		if err != nil {
			t.mu.Unlock()
			return nil, fmt.Errorf("creating subscription %s on %s: %w", opts.Subscription, opts.Topic, err)
		}
		s = newSubscription(t, opts.Subscription, b.seed)
		t.subs[opts.Subscription] = s
	}
	t.mu.Unlock()

	b.tmu.Lock()
	b.nextID++
	id := b.nextID
	c := &consumer{
		b:    b,
		s:    s,
		opts: opts,
		hand: keyshared.NewHandouts[*message](),
	}
	b.consumers[c] = struct{}{}
	b.tmu.Unlock()
	s.mu.Lock()
	s.ks.Join(c, keyshared.Salt(id))
	s.mu.Unlock()
	return c, nil
}

// Ping reports whether the bus takes writes: open, with disk space.
func (b *Bus) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return bus.ErrClosed
	}
	return b.checkSpace()
}

// Close refuses further calls, waits for publishes in progress, closes every
// open consumer (waiting, bounded by ctx, for handed-out messages to be
// settled; unsettled ones stay pending on disk), stops retention and closes
// the store, syncing acknowledgements not yet synced. It is idempotent; a
// concurrent call waits for the first.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		select {
		case <-b.closeDone:
		case <-ctx.Done():
		}
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	defer close(b.closeDone)

	b.tmu.Lock()
	consumers := slices.Collect(maps.Keys(b.consumers))
	b.tmu.Unlock()
	var errs []error
	for _, c := range consumers {
		if err := c.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	b.refillMu.Lock()
	b.noRefills = true
	b.refillMu.Unlock()
	close(b.stop)
	b.bg.Wait()

	// The deferred acks, the counts of first deliveries handed out and not
	// settled (recovery would not count them after a clean close), and the
	// marker that says so, in one batch.
	if err := b.writeCleanClose(); err != nil {
		errs = append(errs, err)
	}

	b.dbMu.Lock()
	b.dbClosed = true
	// Pebble's Close syncs the WAL, acks included, before closing it.
	if err := b.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing store: %w", err))
	}
	b.dbMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing embedded bus: %w", err)
	}
	return nil
}

// Backlog counts a subscription's messages not yet acknowledged (waiting or
// handed out); zero for an unknown topic or subscription.
func (b *Bus) Backlog(_ context.Context, topicName, subscription string) (int64, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, bus.ErrClosed
	}
	b.tmu.Lock()
	t := b.topics[topicName]
	b.tmu.Unlock()
	if t == nil {
		return 0, nil
	}
	t.mu.Lock()
	s := t.subs[subscription]
	t.mu.Unlock()
	if s == nil {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.ks.Backlog()) + s.spilled, nil
}

// Stored is one message read back by Replay.
type Stored struct {
	bus.Message
	ID          string
	PublishTime time.Time
}

// Replay calls fn, in publish order, for each stored message of topic
// published in [from, to), acknowledged or not, until fn returns an error
// (which Replay returns). What retention deleted is gone. It reads a
// consistent view; fn may publish. Close stops it.
func (b *Bus) Replay(ctx context.Context, topicName string, from, to time.Time, fn func(Stored) error) error {
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return fmt.Errorf("replaying %s: %w", topicName, bus.ErrClosed)
	}
	b.bg.Add(1) // Close waits for it, after stopping it
	b.mu.RUnlock()
	defer b.bg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // Close stops a replay under way
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	prefix := topicPrefix(kindMessage, topicName)
	it, err := b.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("replaying %s: %w", topicName, err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replaying %s: %w", topicName, err)
		}
		_, _, _, seq, err := parseKey(it.Key())
		if err != nil {
			return fmt.Errorf("replaying %s: key %q: %w", topicName, it.Key(), err)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("replaying %s: message %d: %w", topicName, seq, withDetails(err))
		}
		published, err := publishedAt(v)
		if err != nil {
			return fmt.Errorf("replaying %s: message %d: %w", topicName, seq, err)
		}
		if published.Before(from) || !published.Before(to) {
			continue
		}
		m, _, err := decodeMessage(v)
		if err != nil {
			return fmt.Errorf("replaying %s: message %d: %w", topicName, seq, err)
		}
		if err := fn(Stored{Message: m, ID: strconv.FormatUint(seq, 10), PublishTime: published}); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("replaying %s: %w", topicName, withDetails(err))
	}
	return nil
}

// WALSyncs is how many times the store has fsynced its write-ahead log since
// Open, and how long they took in all, from Pebble's WAL fsync latency
// histogram: publishes divided by the count is the group commit's batching.
func (b *Bus) WALSyncs() (n uint64, took time.Duration) {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.dbClosed {
		return 0, 0
	}
	h := b.db.Metrics().LogWriter.FsyncLatency
	if h == nil {
		return 0, 0
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram == nil {
		return 0, 0
	}
	return m.Histogram.GetSampleCount(), time.Duration(m.Histogram.GetSampleSum())
}

// pebbleLogger sends Pebble's log lines to slog. Fatalf keeps Pebble's
// meaning (it calls it when its commit pipeline cannot go on, e.g. a failed
// WAL write): log, then exit, rather than serve from a broken store.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error("fatal store error; exiting", "err", fmt.Sprintf(format, args...))
	pebble.DefaultLogger.Fatalf(format, args...)
}

// History implements bus.Historian with Replay.
func (b *Bus) History(ctx context.Context, topic string, from, to time.Time, fn func(bus.Message, time.Time) error) error {
	return b.Replay(ctx, topic, from, to, func(s Stored) error { return fn(s.Message, s.PublishTime) })
}
