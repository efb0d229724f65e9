package main

// The TensorFlow C API through cgo. Header and library paths come from the pip wheel via
// the #cgo lines of zz_tf_paths.go, which the Makefile generates; the signature reader is
// the C client's (../c/signature.c, compiled by tfc_cgo.c).

/*
#cgo CFLAGS: -O2 -I${SRCDIR}/../c
#include <stdint.h>
#include <stdlib.h>
#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"
#include "signature.h"
#include "quiet.h"

static TF_TString *tstr_at(TF_Tensor *t, int64_t i) { return (TF_TString *)TF_TensorData(t) + i; }
static const tfc_signature *sig_at(const tfc_signature_map *m, size_t i) { return &m->items[i]; }
static const tfc_tensor_info *info_at(const tfc_tensor_info *a, size_t i) { return &a[i]; }
static int64_t tensor_dim0(const TF_Tensor *t) { return TF_NumDims(t) == 1 ? TF_Dim(t, 0) : -1; }
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"
)

var codeNames = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
	"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func restoreStderr() { C.tfc_restore_stderr() }

func statusError(s *C.TF_Status) error {
	code := int(C.TF_GetCode(s))
	if code == 0 {
		return nil
	}
	name := "ERROR"
	if code < len(codeNames) {
		name = codeNames[code]
	}
	return fmt.Errorf("%s: %s", name, C.GoString(C.TF_Message(s)))
}

type tensorInfo struct {
	Key, Name string
	DType     int
}

type signature struct {
	Key, Method     string
	Inputs, Outputs []tensorInfo
}

func (s *signature) input(key string) *tensorInfo  { return find(s.Inputs, key) }
func (s *signature) output(key string) *tensorInfo { return find(s.Outputs, key) }

func find(a []tensorInfo, key string) *tensorInfo {
	for i := range a {
		if a[i].Key == key {
			return &a[i]
		}
	}
	return nil
}

func dtypeName(dtype int) string { return C.GoString(C.tfc_dtype_name(C.int(dtype))) }

// parseSignatures reads the signature_def map of a serialized MetaGraphDef with the C
// reader and copies it into Go values.
func parseSignatures(meta *C.TF_Buffer) ([]signature, error) {
	var m C.tfc_signature_map
	var errbuf [256]C.char
	if C.tfc_signatures_parse(meta.data, meta.length, &m, &errbuf[0], C.size_t(len(errbuf))) != 0 {
		return nil, fmt.Errorf("%s", C.GoString(&errbuf[0]))
	}
	defer C.tfc_signatures_free(&m)
	infos := func(a *C.tfc_tensor_info, n C.size_t) []tensorInfo {
		out := make([]tensorInfo, 0, int(n))
		for i := C.size_t(0); i < n; i++ {
			ti := C.info_at(a, i)
			out = append(out, tensorInfo{C.GoString(ti.key), C.GoString(ti.name), int(ti.dtype)})
		}
		return out
	}
	sigs := make([]signature, 0, int(m.n))
	for i := C.size_t(0); i < m.n; i++ {
		s := C.sig_at(&m, i)
		sigs = append(sigs, signature{C.GoString(s.key), C.GoString(s.method_name),
			infos(s.inputs, s.n_inputs), infos(s.outputs, s.n_outputs)})
	}
	return sigs, nil
}

// model is a loaded SavedModel: graph, session and its signatures.
type model struct {
	graph   *C.TF_Graph
	session *C.TF_Session
	sigs    []signature
}

func loadModel(dir string) (*model, error) {
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	opts := C.TF_NewSessionOptions()
	defer C.TF_DeleteSessionOptions(opts)
	meta := C.TF_NewBuffer()
	defer C.TF_DeleteBuffer(meta)
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	tag := C.CString("serve")
	defer C.free(unsafe.Pointer(tag))
	tags := (**C.char)(C.malloc(C.size_t(unsafe.Sizeof(tag))))
	defer C.free(unsafe.Pointer(tags))
	*tags = tag

	m := &model{graph: C.TF_NewGraph()}
	m.session = C.TF_LoadSessionFromSavedModel(opts, nil, cdir, tags, 1, m.graph, meta, status)
	if err := statusError(status); err != nil {
		m.session = nil
		m.close()
		return nil, err
	}
	sigs, err := parseSignatures(meta)
	if err != nil {
		m.close()
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	m.sigs = sigs
	return m, nil
}

func (m *model) close() {
	if m.session != nil {
		s := C.TF_NewStatus()
		C.TF_CloseSession(m.session, s)
		C.TF_DeleteSession(m.session, s)
		C.TF_DeleteStatus(s)
		m.session = nil
	}
	if m.graph != nil {
		C.TF_DeleteGraph(m.graph)
		m.graph = nil
	}
}

func (m *model) signature(key string) *signature {
	for i := range m.sigs {
		if m.sigs[i].Key == key {
			return &m.sigs[i]
		}
	}
	return nil
}

// output resolves "op:index" to a TF_Output of the graph.
func (m *model) output(sig string, ti *tensorInfo) (C.TF_Output, error) {
	var out C.TF_Output
	cname := C.CString(ti.Name)
	defer C.free(unsafe.Pointer(cname))
	op := (*C.char)(C.malloc(1024))
	defer C.free(unsafe.Pointer(op))
	var index C.int
	if C.tfc_tensor_name_split(cname, op, 1024, &index) != 0 {
		return out, fmt.Errorf("signature '%s': malformed tensor name '%s' for '%s'", sig, ti.Name, ti.Key)
	}
	out.oper = C.TF_GraphOperationByName(m.graph, op)
	out.index = index
	if out.oper == nil || index >= C.TF_OperationNumOutputs(out.oper) {
		return out, fmt.Errorf("signature '%s': tensor '%s' (for '%s') is not in the graph", sig, ti.Name, ti.Key)
	}
	return out, nil
}

// The generate signature's inputs, in feed order, with the dtypes this client sends.
var inputKeys = []string{"prompt", "max_length", "temperature", "top_k", "top_p", "seed"}
var inputTypes = []C.TF_DataType{C.TF_STRING, C.TF_INT32, C.TF_FLOAT, C.TF_INT32, C.TF_FLOAT, C.TF_INT64}

// inputTypeName is input k's dtype as TensorFlow (and tfchargen/contract.py) names it.
func inputTypeName(k int) string {
	switch inputTypes[k] {
	case C.TF_STRING:
		return "string"
	case C.TF_INT32:
		return "int32"
	case C.TF_FLOAT:
		return "float32"
	case C.TF_INT64:
		return "int64"
	}
	return "?"
}

const sigName = "generate"

// generator holds the resolved feeds and fetch of the generate signature.
type generator struct {
	m     *model
	feeds []C.TF_Output
	fetch C.TF_Output
}

func newGenerator(m *model) (*generator, error) {
	sig := m.signature(sigName)
	if sig == nil {
		return nil, fmt.Errorf("the SavedModel has no '%s' signature (it has %d others)", sigName, len(m.sigs))
	}
	for _, in := range sig.Inputs {
		known := false
		for _, k := range inputKeys {
			known = known || in.Key == k
		}
		if !known {
			return nil, fmt.Errorf("signature '%s' has an input '%s' this client does not know", sigName, in.Key)
		}
	}
	g := &generator{m: m, feeds: make([]C.TF_Output, len(inputKeys))}
	for k, key := range inputKeys {
		ti := sig.input(key)
		if ti == nil {
			return nil, fmt.Errorf("signature '%s' has no input '%s'", sigName, key)
		}
		if ti.DType != int(inputTypes[k]) {
			return nil, fmt.Errorf("signature '%s': input '%s' is %s, expected %s", sigName, key,
				dtypeName(ti.DType), dtypeName(int(inputTypes[k])))
		}
		out, err := m.output(sigName, ti)
		if err != nil {
			return nil, err
		}
		g.feeds[k] = out
	}
	text := sig.output("text")
	if text == nil || text.DType != int(C.TF_STRING) {
		return nil, fmt.Errorf("signature '%s' has no string output 'text'", sigName)
	}
	var err error
	g.fetch, err = m.output(sigName, text)
	return g, err
}

// request is one batch: prompts copied to C memory once, controls per row.
type request struct {
	prompts   []*C.char
	lens      []C.size_t
	maxLength int32
	temp      float32
	topK      int32
	topP      float32
	seed      int64
}

func newRequest(prompts []string, o *options) *request {
	r := &request{maxLength: o.maxLength, temp: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed}
	for _, p := range prompts {
		r.prompts = append(r.prompts, C.CString(p)) // argv strings hold no NUL
		r.lens = append(r.lens, C.size_t(len(p)))
	}
	return r
}

func (r *request) free() {
	for _, p := range r.prompts {
		C.free(unsafe.Pointer(p))
	}
	r.prompts = nil
}

func freeInputs(t []*C.TF_Tensor, batch int64) {
	if t[0] != nil {
		for i := int64(0); i < batch; i++ {
			C.TF_StringDealloc(C.tstr_at(t[0], C.int64_t(i)))
		}
	}
	for k := range t {
		if t[k] != nil {
			C.TF_DeleteTensor(t[k])
			t[k] = nil
		}
	}
}

// makeInputs builds the six [B] tensors; prompts are copied into TF_TStrings that
// freeInputs deallocates before deleting the tensor (as the C client does).
func (r *request) makeInputs() []*C.TF_Tensor {
	b := int64(len(r.prompts))
	dims := []C.int64_t{C.int64_t(b)}
	t := make([]*C.TF_Tensor, len(inputKeys))
	t[0] = C.TF_AllocateTensor(C.TF_STRING, &dims[0], 1, C.size_t(b)*C.size_t(unsafe.Sizeof(C.TF_TString{})))
	for i := int64(0); i < b; i++ {
		s := C.tstr_at(t[0], C.int64_t(i))
		C.TF_StringInit(s)
		C.TF_StringCopy(s, r.prompts[i], r.lens[i])
	}
	for k := 1; k < len(inputKeys); k++ {
		size := C.TF_DataTypeSize(inputTypes[k])
		t[k] = C.TF_AllocateTensor(inputTypes[k], &dims[0], 1, C.size_t(b)*size)
		data := unsafe.Pointer(C.TF_TensorData(t[k]))
		for i := int64(0); i < b; i++ {
			switch k {
			case 1:
				unsafe.Slice((*int32)(data), b)[i] = r.maxLength
			case 2:
				unsafe.Slice((*float32)(data), b)[i] = r.temp
			case 3:
				unsafe.Slice((*int32)(data), b)[i] = r.topK
			case 4:
				unsafe.Slice((*float32)(data), b)[i] = r.topP
			case 5:
				unsafe.Slice((*int64)(data), b)[i] = rowSeed(r.seed, uint64(i))
			}
		}
	}
	return t
}

// run calls the signature once; returns the texts when wantText, and the time spent in
// TF_SessionRun.
func (g *generator) run(r *request, wantText bool) ([][]byte, time.Duration, error) {
	b := int64(len(r.prompts))
	inputs := r.makeInputs()
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	var out *C.TF_Tensor
	start := time.Now()
	C.TF_SessionRun(g.m.session, nil, &g.feeds[0], &inputs[0], C.int(len(inputs)),
		&g.fetch, &out, 1, nil, 0, nil, status)
	elapsed := time.Since(start)
	freeInputs(inputs, b)
	if err := statusError(status); err != nil {
		return nil, elapsed, err
	}
	defer C.TF_DeleteTensor(out) // its strings belong to the tensor: no TF_StringDealloc
	if out == nil || C.TF_TensorType(out) != C.TF_STRING || int64(C.tensor_dim0(out)) != b ||
		uint64(C.TF_TensorByteSize(out)) < uint64(b)*uint64(unsafe.Sizeof(C.TF_TString{})) {
		return nil, elapsed, fmt.Errorf("output 'text' is not a string vector of %d rows", b)
	}
	if !wantText {
		return nil, elapsed, nil
	}
	texts := make([][]byte, b)
	for i := int64(0); i < b; i++ {
		s := C.tstr_at(out, C.int64_t(i))
		texts[i] = C.GoBytes(unsafe.Pointer(C.TF_StringGetDataPointer(s)), C.int(C.TF_StringGetSize(s)))
	}
	return texts, elapsed, nil
}
