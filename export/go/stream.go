package main

// --stream: one prompt's text chunk by chunk, from `start` and then `continue` with each
// returned state_bytes (tfchargen/streaming.py's chunks), as the C client's run_stream.

/*
#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"
*/
import "C"

import (
	"bufio"
	"fmt"
	"unsafe"
)

const (
	defaultChunk int64 = 32   // tfchargen/streaming.py DEFAULT_CHUNK
	maxNewChars  int64 = 2048 // contract.py MAX_NEW_CHARS: one call's (one chunk's) cap
)

// The outputs of start and continue that a stream reads, in fetch order.
const (
	outText = iota
	outNumChars
	outEnded
	outState
)

var streamOutputKeys = []string{"text", "num_chars", "ended_with_eos", "state_bytes"}
var streamOutputTypes = []C.TF_DataType{C.TF_STRING, C.TF_INT32, C.TF_BOOL, C.TF_STRING}

// continueKeys: `continue` takes the state where `start` and `generate` take the prompt.
var continueKeys = []string{"state_bytes", "max_length", "temperature", "top_k", "top_p", "seed"}

// streamSig is one stream signature's resolved feeds (in inputTypes' order) and fetches.
type streamSig struct {
	feeds, fetches []C.TF_Output
}

// bindStream finds a stream signature's feeds (keys, in inputTypes' dtypes) and its four
// fetches.
func bindStream(m *model, name string, keys []string) (*streamSig, error) {
	sig := m.signature(name)
	if sig == nil {
		return nil, fmt.Errorf("the SavedModel has no '%s' signature: --stream needs an export with start and continue", name)
	}
	if len(sig.Inputs) != len(keys) {
		return nil, fmt.Errorf("signature '%s' has %d inputs, expected %d", name, len(sig.Inputs), len(keys))
	}
	s := &streamSig{}
	for k, key := range keys {
		ti := sig.input(key)
		if ti == nil || ti.DType != int(inputTypes[k]) {
			return nil, fmt.Errorf("signature '%s' has no %s input '%s'", name, dtypeName(int(inputTypes[k])), key)
		}
		out, err := m.output(name, ti)
		if err != nil {
			return nil, err
		}
		s.feeds = append(s.feeds, out)
	}
	for k, key := range streamOutputKeys {
		ti := sig.output(key)
		if ti == nil || ti.DType != int(streamOutputTypes[k]) {
			return nil, fmt.Errorf("signature '%s' has no %s output '%s'", name, dtypeName(int(streamOutputTypes[k])), key)
		}
		out, err := m.output(name, ti)
		if err != nil {
			return nil, err
		}
		s.fetches = append(s.fetches, out)
	}
	return s, nil
}

// streamer holds the model's start and continue signatures.
type streamer struct {
	m           *model
	start, cont *streamSig
}

func newStreamer(m *model) (*streamer, error) {
	start, err := bindStream(m, "start", inputKeys)
	if err != nil {
		return nil, err
	}
	cont, err := bindStream(m, "continue", continueKeys)
	if err != nil {
		return nil, err
	}
	return &streamer{m: m, start: start, cont: cont}, nil
}

func freeOutputs(t []*C.TF_Tensor) {
	for k := range t {
		if t[k] != nil {
			C.TF_DeleteTensor(t[k]) // their strings belong to the tensors
			t[k] = nil
		}
	}
}

func checkStreamOutputs(t []*C.TF_Tensor) error {
	for k, key := range streamOutputKeys {
		size := C.size_t(unsafe.Sizeof(C.TF_TString{}))
		if streamOutputTypes[k] != C.TF_STRING {
			size = C.TF_DataTypeSize(streamOutputTypes[k])
		}
		if t[k] == nil || C.TF_TensorType(t[k]) != streamOutputTypes[k] || C.TF_NumDims(t[k]) != 1 ||
			C.TF_Dim(t[k], 0) != 1 || C.TF_TensorByteSize(t[k]) < size {
			return fmt.Errorf("output '%s' is not a vector of 1 row", key)
		}
	}
	return nil
}

// run writes the request's one row chunk by chunk to w, flushing each as it arrives, then a
// newline. The row is done at maxLength characters, at <eos>, or when a chunk it asked for
// came back empty (contract.py MAX_STREAM_CHARS), as in streaming.chunks. The one row sends
// rowSeed(seed, 0), as generate's row 0, so the bytes are those of a run without --stream.
func (s *streamer) run(r *request, chunk int64, w *bufio.Writer) error {
	inputs := r.makeInputs()
	defer freeInputs(inputs, 1)
	size := (*int32)(unsafe.Pointer(C.TF_TensorData(inputs[1])))
	left := int64(r.maxLength)
	next := func() int32 { // negative: the graph's error
		if left < chunk {
			return int32(left)
		}
		return int32(chunk)
	}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	out := make([]*C.TF_Tensor, len(streamOutputKeys))
	defer freeOutputs(out)
	*size = next()
	C.TF_SessionRun(s.m.session, nil, &s.start.feeds[0], &inputs[0], C.int(len(inputs)),
		&s.start.fetches[0], &out[0], C.int(len(out)), nil, 0, nil, status)
	for {
		if err := statusError(status); err != nil {
			return err
		}
		if err := checkStreamOutputs(out); err != nil {
			return err
		}
		text := (*C.TF_TString)(C.TF_TensorData(out[outText]))
		w.Write(unsafe.Slice((*byte)(unsafe.Pointer(C.TF_StringGetDataPointer(text))), int(C.TF_StringGetSize(text))))
		if err := w.Flush(); err != nil {
			return fmt.Errorf("writing output: %v", err)
		}
		got := *(*int32)(unsafe.Pointer(C.TF_TensorData(out[outNumChars])))
		ended := *(*byte)(unsafe.Pointer(C.TF_TensorData(out[outEnded]))) != 0
		left -= int64(got)
		if left <= 0 || ended || (*size > 0 && got == 0) {
			break
		}
		*size = next()
		feed := []*C.TF_Tensor{out[outState], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5]}
		fetched := make([]*C.TF_Tensor, len(out))
		C.TF_SessionRun(s.m.session, nil, &s.cont.feeds[0], &feed[0], C.int(len(feed)),
			&s.cont.fetches[0], &fetched[0], C.int(len(fetched)), nil, 0, nil, status)
		freeOutputs(out)
		copy(out, fetched) // none on failure
	}
	w.WriteByte('\n')
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing output: %v", err)
	}
	return nil
}
