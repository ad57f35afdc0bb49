package sif

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Magic numbers that start a compressed layer.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// zstdMaxWindow bounds the memory a zstd layer's decoder may ask for:
// zstd's levels use at most 8 MiB, its --long mode 128 MiB.
const zstdMaxWindow = 128 << 20

// readLayers returns img with layers read under budget b: their bytes as
// stored count against Options.MaxCompressedBytes, and every entry of
// their tar streams against the entry, name and path limits, before
// mutate.Extract sees it. They decompress with klauspost/compress, about
// twice as fast as the standard library's gzip, which go-containerregistry
// uses: decompressing the layers is the part of a build that a squashfs
// writer given an unpacked tree does not do, so it is kept short. A layer
// that is neither gzip nor zstd is read as an uncompressed tar.
func readLayers(img v1.Image, b *budget) v1.Image { return &budgetImage{Image: img, b: b} }

type budgetImage struct {
	v1.Image
	b *budget
}

func (i *budgetImage) Layers() ([]v1.Layer, error) {
	layers, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(layers))
	for n, l := range layers {
		out[n] = &budgetLayer{Layer: l, b: i.b}
	}
	return out, nil
}

type budgetLayer struct {
	v1.Layer
	b *budget
}

// Uncompressed decompresses Compressed, whose digest go-containerregistry
// checks as it is read.
func (l *budgetLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(&countedReader{r: rc, b: l.b}, 1<<16)
	magic, _ := br.Peek(len(zstdMagic)) // shorter at the end of a tiny layer
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("gunzip layer: %w", err)
		}
		return l.b.scan(zr, func() error {
			zerr := zr.Close()
			if err := rc.Close(); err != nil {
				return err
			}
			return zerr
		}), nil
	case bytes.Equal(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("unzstd layer: %w", err)
		}
		return l.b.scan(zr, func() error { zr.Close(); return rc.Close() }), nil
	default:
		return l.b.scan(br, rc.Close), nil
	}
}
