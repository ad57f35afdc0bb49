package reconciler

import (
	"fmt"
	"time"
)

// LivenessSlack is how far past what is due the loop may be before Alive
// calls it wedged: a rediscovery that lists a large GitLab, or a pass
// that is cancelled at its deadline and takes a while to return, is slow,
// not wedged. A process restarted for being slow would only start over.
const LivenessSlack = 5 * time.Minute

// Alive reports whether the loop is not wedged at now, for a liveness
// probe: nil unless Run has not come round for its interval and
// LivenessSlack (a rediscovery that hangs), or a pass or retirement has
// run for longer than PassTimeout and LivenessSlack (work that ignores
// its cancelled context, which no restart of the pass can free). A loop
// that Run has not started yet is alive. It reads two clocks and touches
// nothing else: it is cheap enough for every probe.
func (l *Loop) Alive(now time.Time) error {
	beat := l.beat.Load()
	if beat == 0 {
		return nil
	}
	if since := now.Sub(time.Unix(0, beat)); since > l.interval+LivenessSlack {
		return fmt.Errorf("the poll loop has not come round for %v (its interval is %v): a rediscovery of the repos hangs", since.Round(time.Second), l.interval)
	}
	if l.PassTimeout <= 0 {
		return nil
	}
	var err error
	l.running.Range(func(key, started any) bool {
		if ran := now.Sub(started.(time.Time)); ran > l.PassTimeout+LivenessSlack {
			err = fmt.Errorf("the pass of %s has run for %v, past its deadline of %v: a worker is stuck", key, ran.Round(time.Second), l.PassTimeout)
			return false
		}
		return true
	})
	return err
}

// InFlight is how many passes and retirements are under way.
func (l *Loop) InFlight() int {
	n := 0
	l.running.Range(func(any, any) bool { n++; return true })
	return n
}

// QueueDepth is how many repos wait on the work queue for a worker,
// those whose next pass is not due yet left out.
func (l *Loop) QueueDepth() int { return l.queue.Len() }
