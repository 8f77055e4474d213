package main

import (
	"math"
	"testing"
	"time"
)

func TestLatHistQuantiles(t *testing.T) {
	var a, b latHist
	for i := 1; i <= 1000; i++ { // 1..1000 ms, split over two histograms
		h := &a
		if i%2 == 0 {
			h = &b
		}
		h.add(time.Duration(i) * time.Millisecond)
	}
	a.merge(&b)
	for _, c := range []struct{ q, want float64 }{{0.5, 500}, {0.9, 900}, {0.99, 990}, {1, 1000}} {
		if got := a.quantile(c.q); math.Abs(got-c.want) > c.want*0.03 {
			t.Errorf("quantile(%v) = %.1f ms, want %.0f ms within 3%%", c.q, got, c.want)
		}
	}
	var tiny latHist
	tiny.add(time.Microsecond)
	if got := tiny.quantile(0.5); got <= 0 || got > 0.01 {
		t.Errorf("a 1 µs latency reads %.4f ms", got)
	}
	var empty latHist
	if empty.quantile(0.99) != 0 {
		t.Error("an empty histogram has no quantile")
	}
}

func TestStampedDataAndFields(t *testing.T) {
	before := time.Now()
	d := stampedData(128)
	if len(d) != 128 || d[0] != '"' || d[127] != '"' {
		t.Fatalf("stampedData(128) = %q", d)
	}
	line := []byte(`{"op":"message","channel":"c","offset":42,"data":` + string(d) + `}`)
	if op := opOf(line); op != "message" {
		t.Errorf("opOf = %q", op)
	}
	if off, ok := field(line, keyOffset); !ok || off != 42 {
		t.Errorf("offset = %d, %v", off, ok)
	}
	ts, ok := field(line, keyData)
	if !ok || time.Unix(0, int64(ts)).Before(before) || time.Unix(0, int64(ts)).After(time.Now()) {
		t.Errorf("stamp %d, %v: not the time it was made", ts, ok)
	}
}
