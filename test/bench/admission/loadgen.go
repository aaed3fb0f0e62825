package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

// result is one load generator run against one server process.
type result struct {
	Proto       string  `json:"proto"` // as negotiated
	Conc        int     `json:"conc"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	CPUus       float64 `json:"cpu_us"` // server user+system CPU during the measured window
	CPUPerReqUs float64 `json:"cpu_per_req_us"`
	HWMKiB      int64   `json:"hwm_kib"`     // filled in by the driver, as are:
	AnonKiB     int64   `json:"anon_kib"`    // RssAnon at the end (heap, stacks)
	FileKiB     int64   `json:"file_kib"`    // RssFile at the end (the binary's pages)
	PatchBytes  int     `json:"patch_bytes"` // the first response's JSONPatch
	FirstError  string  `json:"first_error,omitempty"`
}

const numBodies = 64

// runLoadgen is the `loadgen` subcommand: it runs in its own process,
// pinned apart from the server, and prints one result as JSON.
func runLoadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	url := fs.String("url", "", "webhook URL")
	proto := fs.String("proto", "h2", "http/1.1 or h2")
	conc := fs.Int("c", 1, "concurrent requests")
	duration := fs.Duration("duration", 5*time.Second, "measured time")
	warmup := fs.Duration("warmup", time.Second, "time before measuring")
	pid := fs.Int("pid", 0, "server process whose CPU is measured")
	caFile := fs.String("ca", "", "PEM CA of the server certificate")
	expect := fs.String("expect", "", "the first response's patch must contain this")
	optIn := fs.String("optin", optInKvinject, "the injector whose opt-in the pods carry: kvinject, azwi or vault-k8s")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bodies := make([][]byte, numBodies)
	for i := range bodies {
		b, err := benchReview(i, *optIn)
		if err != nil {
			return err
		}
		bodies[i] = b
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA certificate in " + *caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"},
		MaxIdleConnsPerHost: *conc,
		MaxConnsPerHost:     *conc,
		DisableCompression:  true,
		Protocols:           new(http.Protocols),
	}
	switch *proto {
	case "h2":
		tr.Protocols.SetHTTP2(true)
	case "http/1.1":
		tr.Protocols.SetHTTP1(true)
	default:
		return fmt.Errorf("unknown protocol %q", *proto)
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()

	// One checked request first: the server answers what we expect.
	negotiated, patchBytes, err := check(client, *url, bodies[0], *expect)
	if err != nil {
		return err
	}

	var next atomic.Uint64
	phase := func(d time.Duration, record bool) (lat []time.Duration, nerr int, firstErr string) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := 0; w < *conc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var my []time.Duration
				if record {
					my = make([]time.Duration, 0, 1<<14)
				}
				var myErr int
				var myFirst string
				buf := bytes.NewBuffer(make([]byte, 0, 16<<10))
				for ctx.Err() == nil {
					body := bodies[next.Add(1)%numBodies]
					t0 := time.Now()
					err := post(client, *url, body, buf)
					el := time.Since(t0)
					if ctx.Err() != nil && err != nil {
						break // cut short by the deadline: not an error, not a sample
					}
					if err != nil {
						myErr++
						if myFirst == "" {
							myFirst = err.Error()
						}
						continue
					}
					if record {
						my = append(my, el)
					}
				}
				mu.Lock()
				lat = append(lat, my...)
				nerr += myErr
				if firstErr == "" {
					firstErr = myFirst
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		return lat, nerr, firstErr
	}

	phase(*warmup, false)
	cpu0, err := procCPU(*pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	lat, nerr, firstErr := phase(*duration, true)
	el := time.Since(t0)
	cpu1, err := procCPU(*pid)
	if err != nil {
		return err
	}
	slices.Sort(lat)
	r := result{
		Proto: negotiated, Conc: *conc, Requests: len(lat), Errors: nerr, Seconds: el.Seconds(),
		CPUus: float64(cpu1-cpu0) * 1e6 / clockTicks, FirstError: firstErr, PatchBytes: patchBytes,
	}
	if len(lat) > 0 {
		r.RPS = float64(len(lat)) / el.Seconds()
		r.P50us = float64(lat[len(lat)*50/100].Nanoseconds()) / 1e3
		r.P99us = float64(lat[len(lat)*99/100].Nanoseconds()) / 1e3
		r.CPUPerReqUs = r.CPUus / float64(len(lat))
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func post(client *http.Client, url string, body []byte, buf *bytes.Buffer) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, buf.Bytes())
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"allowed":true`)) {
		return fmt.Errorf("not allowed: %.300s", buf.Bytes())
	}
	return nil
}

// check sends one request and checks the whole response.
// It returns the negotiated protocol and the size of the patch.
func check(client *http.Client, url string, body []byte, expect string) (proto string, patchBytes int, err error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", 0, err
	}
	var in, out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil {
		return "", 0, err
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Response == nil {
		return "", 0, fmt.Errorf("HTTP %d, not an AdmissionReview: %.300s", resp.StatusCode, b)
	}
	r := out.Response
	switch {
	case r.UID != in.Request.UID:
		return "", 0, fmt.Errorf("response uid %q, want %q", r.UID, in.Request.UID)
	case !r.Allowed:
		return "", 0, fmt.Errorf("denied: %+v", r.Result)
	case r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch || !strings.Contains(string(r.Patch), expect):
		return "", 0, fmt.Errorf("patch has no %q: %.300s", expect, r.Patch)
	}
	return resp.Proto, len(r.Patch), nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux.
const clockTicks = 100

// procCPU returns utime+stime of a process, in clock ticks.
func procCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return ut + st, nil
}

// procMem returns a process's peak resident set size (VmHWM) and its
// current anonymous and file-backed resident sizes, in KiB.
func procMem(pid int) (hwm, anon, file int64, err error) {
	m, err := procStatus(pid)
	return m.HWM, m.Anon, m.File, err
}

// procRSS returns a process's current resident set (VmRSS) and its
// anonymous and file-backed parts, in KiB.
func procRSS(pid int) (rss, anon, file int64, err error) {
	m, err := procStatus(pid)
	return m.RSS, m.Anon, m.File, err
}

// procStatus reads /proc/<pid>/status through benchkit; a status without
// a resident set (the process has ended) is an error.
func procStatus(pid int) (benchkit.ProcMem, error) {
	m, err := benchkit.ReadProcStatus(pid)
	if err == nil && (m.RSS == 0 || m.HWM == 0) {
		err = fmt.Errorf("/proc/%d/status has no resident set", pid)
	}
	if err != nil {
		return benchkit.ProcMem{}, err
	}
	return m, nil
}
