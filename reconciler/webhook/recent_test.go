package webhook

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
)

func TestRecentKeepsTheLastDeliveriesNewestFirstWithTheirOutcome(t *testing.T) {
	h := newTestHandler(t, nil)
	push := fixture(t, "push.json")
	serve(h, delivery("Push Hook", push, nil))
	serve(h, delivery("Push Hook", push, map[string]string{headerToken: "wrong"}))
	serve(h, delivery("Push Hook", []byte("{"), nil))
	got := h.Recent()
	want := []Delivery{
		{Time: testNow, Event: "push", Outcome: outcomeBadRequest, Status: http.StatusBadRequest},
		{Time: testNow, Event: "push", Outcome: outcomeUnauthorized, Status: http.StatusUnauthorized},
		{Time: testNow, Event: "push", Outcome: outcomeAccepted, Status: http.StatusAccepted, Project: "mike/diaspora"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Recent:\n got %+v\nwant %+v", got, want)
	}
}

func TestRecentHoldsAtMostRecentLimitDeliveries(t *testing.T) {
	h := newTestHandler(t, nil)
	for i := range RecentLimit + 7 {
		serve(h, delivery("Push Hook", []byte(fmt.Sprint(i)), map[string]string{headerToken: "wrong"}))
	}
	if n := len(h.Recent()); n != RecentLimit {
		t.Errorf("%d deliveries held, want %d", n, RecentLimit)
	}
}
