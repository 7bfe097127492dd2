// Command gh-loadgen is a small HTTP load generator for bench/serve.py (standard library only).
//
// It POSTs JSON bodies round-robin to one URL over keep-alive connections, in one of two modes:
//
//   - closed loop (-concurrency N): N workers post back to back for -duration seconds; this
//     measures saturated throughput.
//   - open loop (-rate R): requests start on a fixed schedule of R per second for -duration
//     seconds, whatever the server does; latency is measured from each request's *scheduled*
//     start, so queueing (in the client, the network or the server) counts.
//
// Bodies come from -bodies FILE (one JSON document per line) and/or -body JSON (repeatable). The
// result is one JSON line on stdout: requests (successful, HTTP 200), errors, duration_s,
// requests_per_s, p50_ms, p90_ms, p99_ms, max_ms, mean_ms (plus the first error seen, if any).
//
// For the ingest gateway: -content-type sets the Content-Type (default application/json);
// -tokens FILE holds one bearer token per line, body i going with token i (round-robin; else the
// one token in $GH_LOADGEN_BEARER_TOKEN); -split-values sends each body line's concatenated JSON
// values one per line (REST Proxy v3 records); -chunked sends bodies without a Content-Length
// (chunked: v3 streaming mode); -check-results counts an answer as an error unless each of its
// lines is a JSON object with "error_code": 200 (v3 results).
//
//	gh-loadgen -url http://127.0.0.1:8000/climate/control -bodies bodies.jsonl -concurrency 8 -duration 20
//	gh-loadgen -url http://127.0.0.1:8000/climate/control -body '{"greenhouse_id":"gh-01"}' -rate 50 -duration 20
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type bodyList []string

func (b *bodyList) String() string     { return strings.Join(*b, "\n") }
func (b *bodyList) Set(v string) error { *b = append(*b, v); return nil }

// Result is the JSON line printed at the end.
type Result struct {
	Mode         string   `json:"mode"`
	Concurrency  int      `json:"concurrency,omitempty"`
	OfferedRate  float64  `json:"offered_rate,omitempty"`
	Requests     int      `json:"requests"`
	Errors       int      `json:"errors"`
	DurationS    float64  `json:"duration_s"`
	RequestsPerS float64  `json:"requests_per_s"`
	P50Ms        *float64 `json:"p50_ms"`
	P90Ms        *float64 `json:"p90_ms"`
	P99Ms        *float64 `json:"p99_ms"`
	MaxMs        *float64 `json:"max_ms"`
	MeanMs       *float64 `json:"mean_ms"`
	LateStarts   int      `json:"late_starts,omitempty"` // open loop: sends that began > 1 ms after their slot
	FirstError   string   `json:"first_error,omitempty"`
}

type recorder struct {
	mu         sync.Mutex
	latencies  []time.Duration
	errors     int
	firstError string
}

func (r *recorder) record(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errors++
		if r.firstError == "" {
			r.firstError = err.Error()
		}
		return
	}
	r.latencies = append(r.latencies, d)
}

type poster struct {
	client       *http.Client
	url          string
	bodies       [][]byte
	bearers      []string // body i is sent with "Authorization: Bearer " + bearers[i % len] (none when empty)
	contentType  string
	chunked      bool // send without a Content-Length (Transfer-Encoding: chunked)
	checkResults bool // every answer line must be a JSON object with "error_code": 200
}

// post sends body i (round-robin) and reads the whole answer, so the connection is reused.
func (p *poster) post(i int) error {
	body := p.bodies[i%len(p.bodies)]
	var reader io.Reader = bytes.NewReader(body)
	if p.chunked {
		reader = io.MultiReader(reader) // a reader of unknown length: net/http sends it chunked
	}
	req, err := http.NewRequest(http.MethodPost, p.url, reader)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", p.contentType)
	if len(p.bearers) > 0 {
		req.Header.Set("Authorization", "Bearer "+p.bearers[i%len(p.bearers)])
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	answer, readErr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, answer)
	}
	if readErr == nil && p.checkResults {
		return checkResults(answer)
	}
	return readErr
}

// checkResults fails unless every line of answer is a JSON object with "error_code": 200.
func checkResults(answer []byte) error {
	for _, line := range bytes.Split(bytes.TrimSpace(answer), []byte("\n")) {
		var result struct {
			ErrorCode int    `json:"error_code"`
			Message   string `json:"message"`
		}
		if err := json.Unmarshal(line, &result); err != nil || result.ErrorCode != 200 {
			return fmt.Errorf("result %d: %s (%.200s)", result.ErrorCode, result.Message, line)
		}
	}
	return nil
}

// splitValues returns the JSON values concatenated in body, each followed by a newline.
func splitValues(body []byte) ([]byte, error) {
	var out bytes.Buffer
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		var value json.RawMessage
		if err := dec.Decode(&value); err == io.EOF {
			return out.Bytes(), nil
		} else if err != nil {
			return nil, err
		}
		out.Write(value)
		out.WriteByte('\n')
	}
}

// readLines returns the non-empty lines of a file.
func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out, nil
}

func closedLoop(p *poster, rec *recorder, concurrency int, duration time.Duration) time.Duration {
	started := time.Now()
	stop := started.Add(duration)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for time.Now().Before(stop) {
				t := time.Now()
				err := p.post(k)
				rec.record(time.Since(t), err)
				k += concurrency
			}
		}(w)
	}
	wg.Wait()
	return time.Since(started)
}

func openLoop(p *poster, rec *recorder, rate float64, duration time.Duration, late *int64) time.Duration {
	n := int(duration.Seconds() * rate)
	interval := float64(time.Second) / rate
	t0 := time.Now().Add(20 * time.Millisecond)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		due := t0.Add(time.Duration(float64(i) * interval))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			if time.Since(due) > time.Millisecond {
				atomic.AddInt64(late, 1)
			}
			err := p.post(i)
			rec.record(time.Since(due), err) // from the scheduled start: late starts count
		}(i, due)
	}
	wg.Wait()
	return time.Since(t0)
}

func readBodies(path string, extra []string, split bool) ([][]byte, error) {
	var out [][]byte
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			out = append(out, append([]byte(nil), line...))
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	for _, b := range extra {
		out = append(out, []byte(b))
	}
	for i, b := range out {
		if split {
			values, err := splitValues(b)
			if err != nil {
				return nil, fmt.Errorf("body %d is not concatenated JSON: %v", i, err)
			}
			out[i] = values
		} else if !json.Valid(b) {
			return nil, fmt.Errorf("body %d is not valid JSON", i)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no bodies: give -bodies FILE or -body JSON")
	}
	return out, nil
}

func ms(d time.Duration) *float64 {
	v := math.Round(float64(d)/float64(time.Millisecond)*100) / 100
	return &v
}

func summarise(res *Result, rec *recorder, wall time.Duration) {
	lat := rec.latencies
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	n := len(lat)
	res.Requests = n
	res.Errors = rec.errors
	res.FirstError = rec.firstError
	res.DurationS = math.Round(wall.Seconds()*1000) / 1000
	if wall > 0 {
		res.RequestsPerS = math.Round(float64(n)/wall.Seconds()*10) / 10
	}
	if n == 0 {
		return
	}
	at := func(q float64) time.Duration {
		i := int(float64(n) * q)
		if i > n-1 {
			i = n - 1
		}
		return lat[i]
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	res.P50Ms, res.P90Ms, res.P99Ms = ms(at(0.5)), ms(at(0.9)), ms(at(0.99))
	res.MaxMs, res.MeanMs = ms(lat[n-1]), ms(sum/time.Duration(n))
}

// bearerEnv names the variable holding the token to send: an environment variable, not a flag,
// so that the token is not in the process list.
const bearerEnv = "GH_LOADGEN_BEARER_TOKEN"

func main() {
	var extra bodyList
	url := flag.String("url", "", "URL to POST to (required)")
	bodiesFile := flag.String("bodies", "", "file with one JSON body per line (sent round-robin)")
	flag.Var(&extra, "body", "a JSON body (repeatable; appended after -bodies)")
	concurrency := flag.Int("concurrency", 0, "closed loop: this many workers posting back to back")
	rate := flag.Float64("rate", 0, "open loop: requests started per second on a fixed schedule")
	duration := flag.Float64("duration", 20, "seconds to run")
	warmup := flag.Float64("warmup", 0, "seconds of unrecorded closed-loop load first (uses -concurrency, or 4 workers)")
	timeout := flag.Float64("timeout", 30, "per-request timeout in seconds")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: Go's default)")
	contentType := flag.String("content-type", "application/json", "Content-Type of every request")
	tokensFile := flag.String("tokens", "", "file with one bearer token per line: body i goes with token i (round-robin)")
	split := flag.Bool("split-values", false, "send each body line's concatenated JSON values one per line")
	chunked := flag.Bool("chunked", false, "send bodies chunked, without a Content-Length (REST Proxy v3 streaming)")
	check := flag.Bool("check-results", false, "an answer is an error unless each of its lines has \"error_code\": 200")
	flag.Parse()

	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "gh-loadgen: "+format+"\n", a...)
		os.Exit(2)
	}
	if *url == "" {
		fail("-url is required")
	}
	if (*concurrency > 0) == (*rate > 0) {
		fail("give exactly one of -concurrency N (closed loop) or -rate R (open loop)")
	}
	if *duration <= 0 {
		fail("-duration must be positive")
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	bodies, err := readBodies(*bodiesFile, extra, *split)
	if err != nil {
		fail("%v", err)
	}
	var bearers []string
	if *tokensFile != "" {
		if bearers, err = readLines(*tokensFile); err != nil || len(bearers) == 0 {
			fail("-tokens %s: no tokens (%v)", *tokensFile, err)
		}
	} else if token := os.Getenv(bearerEnv); token != "" {
		bearers = []string{token}
	}
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: transport, Timeout: time.Duration(*timeout * float64(time.Second))}
	p := &poster{client: client, url: *url, bodies: bodies, bearers: bearers, contentType: *contentType, chunked: *chunked, checkResults: *check}

	if *warmup > 0 {
		workers := *concurrency
		if workers <= 0 {
			workers = 4
		}
		closedLoop(p, &recorder{}, workers, time.Duration(*warmup*float64(time.Second)))
	}
	rec := &recorder{}
	res := Result{}
	d := time.Duration(*duration * float64(time.Second))
	var wall time.Duration
	if *concurrency > 0 {
		res.Mode, res.Concurrency = "closed", *concurrency
		wall = closedLoop(p, rec, *concurrency, d)
	} else {
		var late int64
		res.Mode, res.OfferedRate = "open", *rate
		wall = openLoop(p, rec, *rate, d, &late)
		res.LateStarts = int(late)
	}
	summarise(&res, rec, wall)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
