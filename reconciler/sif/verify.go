package sif

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	libsif "github.com/apptainer/sif/v2/pkg/sif"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Info is what Verify read from a SIF.
type Info struct {
	// ID is the SIF's UUID.
	ID string
	// Arch is the SIF header's architecture (Go's names), from its primary
	// partition.
	Arch string
	// Created is the SIF's creation time: the image's.
	Created time.Time
	// Size is the file's size.
	Size int64
	// Objects are all the data objects, in descriptor order.
	Objects []Object
	// Primary is the primary system partition.
	Primary Object
	// Config is the image configuration of the ConfigObjectName object,
	// nil when there is none (a SIF WhaleMountain did not build).
	Config *v1.ConfigFile
}

// Object is one data object of a SIF.
type Object struct {
	ID uint32
	// Type is SIF's name of the data type: "FS", "JSON.Generic", ...
	Type string
	// Name is the object's name, if any.
	Name string
	// Offset and Size locate the object's bytes in the file.
	Offset, Size int64
	// FS, Partition and Arch describe a partition: "Squashfs", "*System"
	// (primary), "amd64".
	FS, Partition, Arch string
}

// squashfsMagic starts every squashfs superblock ("hsqs").
var squashfsMagic = []byte("hsqs")

// Verify reads the SIF at path with the sif library and checks that it is
// one apptainer can run: a primary system partition that is a squashfs
// (its superblock's magic checked), and, when present, an image config
// that decodes. It fails with ErrInvalidSIF, or the error of opening path.
func Verify(path string) (Info, error) {
	fail := func(format string, args ...any) (Info, error) {
		return Info{}, &classified{kind: ErrInvalidSIF, err: fmt.Errorf("%s: "+format, append([]any{path}, args...)...)}
	}
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("verify SIF: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("verify SIF: %w", err)
	}
	img, err := libsif.LoadContainer(f, libsif.OptLoadWithCloseOnUnload(false))
	if err != nil {
		return fail("%v", err)
	}
	defer img.UnloadContainer()

	info := Info{ID: img.ID(), Arch: img.PrimaryArch(), Created: img.CreatedAt().UTC(), Size: fi.Size()}
	primary := false
	var objErr error
	img.WithDescriptors(func(d libsif.Descriptor) bool {
		o := Object{ID: d.ID(), Type: d.DataType().String(), Name: d.Name(), Offset: d.Offset(), Size: d.Size()}
		if d.Offset() < 0 || d.Size() < 0 || d.Offset()+d.Size() > fi.Size() {
			objErr = fmt.Errorf("object %d lies outside the file", d.ID())
			return true
		}
		switch d.DataType() {
		case libsif.DataPartition:
			fs, pt, arch, err := d.PartitionMetadata()
			if err != nil {
				objErr = fmt.Errorf("object %d: %w", d.ID(), err)
				return true
			}
			o.FS, o.Partition, o.Arch = fs.String(), pt.String(), arch
			if pt == libsif.PartPrimSys {
				primary = true
				info.Primary = o
				if fs != libsif.FsSquash {
					objErr = fmt.Errorf("primary partition is %s, not squashfs", fs)
					return true
				}
				magic := make([]byte, len(squashfsMagic))
				if _, err := io.ReadFull(d.GetReader(), magic); err != nil || !bytes.Equal(magic, squashfsMagic) {
					objErr = fmt.Errorf("primary partition holds no squashfs superblock")
					return true
				}
			}
		case libsif.DataGenericJSON:
			if d.Name() == ConfigObjectName {
				var cfg v1.ConfigFile
				if err := json.NewDecoder(d.GetReader()).Decode(&cfg); err != nil {
					objErr = fmt.Errorf("%s: %w", ConfigObjectName, err)
					return true
				}
				info.Config = &cfg
			}
		}
		info.Objects = append(info.Objects, o)
		return false
	})
	if objErr != nil {
		return fail("%v", objErr)
	}
	if !primary {
		return fail("no primary system partition")
	}
	return info, nil
}
