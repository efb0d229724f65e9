// tfchargen-go: calls a tfchargen SavedModel's `generate` signature through the
// TensorFlow C API (cgo, the pip wheel's libraries) and prints the `text` output, one
// line per prompt. Same command line, output and errors as the C client (../c):
//
//	tfchargen-go [--max-length N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//	             [--repeat N] [--timing] [--signature-dump] [--print-contract] MODEL PROMPT...
//	tfchargen-go --stream [--chunk N] [--max-length N] [...] MODEL PROMPT
//
// --stream prints one prompt's text chunk by chunk as it arrives: `start`, then
// `continue` with each returned state_bytes until the row ends or has --max-length new
// characters (tfchargen/streaming.py's chunks), the same bytes as without --stream.
//
// MODEL is an export base (its newest numbered version is used) or one version's
// directory; defaults are tfchargen/contract.py's SERVING_DEFAULTS; row i's seed is
// rowSeed(--seed, i) (tfchargen/seeds.py).
//
// Build: make -C export/go (sets the cgo flags from the TensorFlow wheel).
package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

const prog = "tfchargen-go"
const usage = "usage: " + prog + " [--max-length N] [--temperature T] [--top-k K] [--top-p P] [--seed S]" +
	" [--repeat N] [--timing] [--signature-dump] [--print-contract] [--stream [--chunk N]]" +
	" MODEL PROMPT..."

// The contract's serving defaults (tfchargen/contract.py SERVING_DEFAULTS); --print-contract
// prints them with the signature's inputs, and the tests compare them with contract.py.
const (
	defaultMaxLength   int32   = 100
	defaultTemperature float32 = 0.8
	defaultTopK        int32   = 0
	defaultTopP        float32 = 1.0
	defaultSeed        int64   = 0
)

func printContract() {
	fmt.Printf(`{"signature": "%s", "inputs": {`, sigName)
	for k, key := range inputKeys {
		sep := ", "
		if k == 0 {
			sep = ""
		}
		fmt.Printf(`%s"%s": "%s"`, sep, key, inputTypeName(k))
	}
	fmt.Printf(`}, "defaults": {"max_length": %d, "temperature": %s, "top_k": %d, "top_p": %s, "seed": %d}}`+"\n",
		defaultMaxLength, strconv.FormatFloat(float64(defaultTemperature), 'g', 9, 32), defaultTopK,
		strconv.FormatFloat(float64(defaultTopP), 'g', 9, 32), defaultSeed)
}

// rowSeed is the seed row index sends for the user's seed: tfchargen/seeds.py row_seed,
// whose docstring is the specification (SplitMix64 output index+1 from state userSeed,
// masked to int64 >= 0, never 0; user seed 0 = every row unseeded).
func rowSeed(userSeed int64, index uint64) int64 {
	if userSeed == 0 {
		return 0
	}
	z := uint64(userSeed) + (index+1)*0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	z = z ^ (z >> 31)
	z = z & 0x7FFFFFFFFFFFFFFF
	if z == 0 {
		return 1
	}
	return int64(z)
}

// resolveModelDir reads MODEL as `tfchargen generate --model` does: a directory holding
// saved_model.pb(txt) is one version; otherwise its numerically largest all-digit
// subdirectory (TF Serving's layout) is. With neither, MODEL itself, so the loader's
// NOT_FOUND names it.
func resolveModelDir(model string) string {
	for _, f := range []string{"saved_model.pb", "saved_model.pbtxt"} {
		if _, err := os.Stat(filepath.Join(model, f)); err == nil {
			return model
		}
	}
	entries, err := os.ReadDir(model)
	if err != nil {
		return model
	}
	best, bestV := "", uint64(0)
	for _, e := range entries {
		name := e.Name()
		if len(name) == 0 || len(name) > 18 || strings.Trim(name, "0123456789") != "" {
			continue // not a version (and no overflow)
		}
		v, _ := strconv.ParseUint(name, 10, 64)
		if st, err := os.Stat(filepath.Join(model, name)); err != nil || !st.IsDir() {
			continue
		}
		if best == "" || v > bestV {
			best, bestV = name, v
		}
	}
	if best == "" {
		return model
	}
	return model + "/" + best
}

const (
	exitErr   = 1
	exitUsage = 2
)

var foldRe = regexp.MustCompile(`[ \t\r\n]*[\t\r\n][ \t\r\n]*`)

// printError writes exactly one line: TF messages span lines ("\n\t [[{{node ...}}]]"),
// so every whitespace run holding a line break or tab becomes one space.
func printError(format string, args ...interface{}) {
	msg := foldRe.ReplaceAllString(fmt.Sprintf(format, args...), " ")
	fmt.Fprintf(os.Stderr, "%s: %s\n", prog, strings.TrimRight(msg, " "))
}

type options struct {
	maxLength     int32
	temperature   float32
	topK          int32
	topP          float32
	seed          int64
	repeat        int64
	timing        bool
	signatureDump bool
	stream        bool
	chunk         int64
	modelDir      string
	prompts       []string
}

var errHelp = errors.New("help")
var errPrintContract = errors.New("print contract")

func parseInt(flag, s string, lo, hi int64) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("%s: expected an integer in [%d, %d], got '%s'", flag, lo, hi, s)
	}
	return v, nil
}

func parseFloat(flag, s string) (float32, error) {
	v, err := strconv.ParseFloat(s, 32)
	if err != nil && !(errors.Is(err, strconv.ErrRange) && !math.IsInf(v, 0)) {
		return 0, fmt.Errorf("%s: expected a number, got '%s'", flag, s)
	}
	return float32(v), nil // range checks (temperature >= 0, top_p in (0, 1]) are the graph's
}

func parseArgs(args []string) (*options, error) {
	o := &options{maxLength: defaultMaxLength, temperature: defaultTemperature, topK: defaultTopK,
		topP: defaultTopP, seed: defaultSeed, repeat: 1, chunk: defaultChunk}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if !strings.HasPrefix(a, "--") {
			break // first positional: options end here
		}
		switch a {
		case "--help", "-h":
			return nil, errHelp
		case "--print-contract":
			return nil, errPrintContract
		case "--timing":
			o.timing = true
			continue
		case "--signature-dump":
			o.signatureDump = true
			continue
		case "--stream":
			o.stream = true
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		switch name {
		case "--max-length", "--temperature", "--top-k", "--top-p", "--seed", "--repeat", "--chunk":
		default:
			return nil, fmt.Errorf("unknown option '%s'; %s", a, usage)
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%s needs a value; %s", name, usage)
			}
			i++
			val = args[i]
		}
		var err error
		var v int64
		switch name {
		case "--max-length":
			v, err = parseInt(name, val, math.MinInt32, math.MaxInt32)
			o.maxLength = int32(v)
		case "--top-k":
			v, err = parseInt(name, val, math.MinInt32, math.MaxInt32)
			o.topK = int32(v)
		case "--seed":
			o.seed, err = parseInt(name, val, math.MinInt64, math.MaxInt64)
		case "--chunk":
			o.chunk, err = parseInt(name, val, 1, maxNewChars)
		case "--repeat":
			o.repeat, err = parseInt(name, val, 1, 100000000)
		case "--temperature":
			o.temperature, err = parseFloat(name, val)
		case "--top-p":
			o.topP, err = parseFloat(name, val)
		}
		if err != nil {
			return nil, err
		}
	}
	if i >= len(args) {
		return nil, fmt.Errorf("missing MODEL; %s", usage)
	}
	o.modelDir = args[i]
	o.prompts = args[i+1:]
	if len(o.prompts) == 0 && !o.signatureDump {
		return nil, fmt.Errorf("missing PROMPT; %s", usage)
	}
	if o.stream && len(o.prompts) != 1 {
		return nil, errors.New("--stream prints one text: give one PROMPT")
	}
	return o, nil
}

func dumpSignatures(w *bufio.Writer, sigs []signature) {
	for _, s := range sigs {
		fmt.Fprintf(w, "signature %s method=%s\n", s.Key, s.Method)
		for _, t := range s.Inputs {
			fmt.Fprintf(w, "  input  %s %s %s\n", t.Key, dtypeName(t.DType), t.Name)
		}
		for _, t := range s.Outputs {
			fmt.Fprintf(w, "  output %s %s %s\n", t.Key, dtypeName(t.DType), t.Name)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// printTiming: one line on stderr, the first call apart (it warms the graph up).
func printTiming(load time.Duration, times []time.Duration) {
	first := times[0]
	rest := times
	if len(times) > 1 {
		rest = times[1:]
	}
	rest = append([]time.Duration(nil), rest...)
	var sum time.Duration
	for _, t := range rest {
		sum += t
	}
	sort.Slice(rest, func(a, b int) bool { return rest[a] < rest[b] })
	m := len(rest)
	fmt.Fprintf(os.Stderr, "%s: timing load_ms=%.3f calls=%d first_ms=%.4f median_ms=%.4f mean_ms=%.4f"+
		" min_ms=%.4f p90_ms=%.4f max_ms=%.4f\n", prog, ms(load), len(times), ms(first), ms(rest[m/2]),
		ms(sum)/float64(m), ms(rest[0]), ms(rest[int(float64(m-1)*0.9)]), ms(rest[m-1]))
}

func run() int {
	restoreStderr() // TensorFlow's load-time chatter went to /dev/null (../c/quiet.c)
	o, err := parseArgs(os.Args[1:])
	if err == errHelp {
		fmt.Println(usage)
		return 0
	}
	if err == errPrintContract {
		printContract()
		return 0
	}
	if err != nil {
		printError("%v", err)
		return exitUsage
	}
	start := time.Now()
	m, err := loadModel(resolveModelDir(o.modelDir))
	load := time.Since(start)
	if err != nil {
		printError("%v", err)
		return exitErr
	}
	defer m.close()
	out := bufio.NewWriter(os.Stdout)
	if o.signatureDump {
		dumpSignatures(out, m.sigs)
		if len(o.prompts) == 0 {
			if err := out.Flush(); err != nil {
				printError("writing output: %v", err)
				return exitErr
			}
			return 0
		}
	}
	req := newRequest(o.prompts, o)
	defer req.free()
	if o.stream {
		return runStream(m, req, o.chunk, out)
	}
	g, err := newGenerator(m)
	if err != nil {
		printError("%v", err)
		return exitErr
	}
	times := make([]time.Duration, o.repeat)
	for r := int64(0); r < o.repeat; r++ {
		last := r == o.repeat-1
		texts, elapsed, err := g.run(req, last)
		times[r] = elapsed
		if err != nil {
			printError("%v", err)
			return exitErr
		}
		if last {
			for _, t := range texts {
				out.Write(t)
				out.WriteByte('\n')
			}
		}
	}
	if err := out.Flush(); err != nil {
		printError("writing output: %v", err)
		return exitErr
	}
	if o.timing {
		printTiming(load, times)
	}
	return 0
}

// runStream streams the request's one prompt to out; what it printed before an error stays.
func runStream(m *model, req *request, chunk int64, out *bufio.Writer) int {
	s, err := newStreamer(m)
	if err == nil {
		err = s.run(req, chunk, out)
	}
	if err != nil {
		out.Flush()
		printError("%v", err)
		return exitErr
	}
	return 0
}

func main() {
	// Every cgo call from one OS thread: TensorFlow's per-call allocations then always come
	// from the same malloc arena (a Go program otherwise spreads cgo calls over whatever
	// threads its scheduler has, and under load each new one adds an arena and a C stack).
	runtime.LockOSThread()
	os.Exit(run())
}
