package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/image"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxImageBytes caps an uploaded image.
const MaxImageBytes = 64 << 30

func (s *Server) imagePath(name string) string {
	return filepath.Join(s.cfg.DataDir, "images", name+".img")
}

// uploadImage stores the request body as image name: it is written to a
// temporary file, synced, inspected (an ext4 disk with a kernel and initrd
// in /boot, not truncated), then renamed into place and recorded, so a
// broken or interrupted upload never replaces a good image.
func (s *Server) uploadImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := api.ValidateName("name", name); err != nil {
		badRequest(w, err)
		return
	}
	if r.ContentLength == 0 {
		writeError(w, http.StatusBadRequest, "invalid", "", "empty body: send the raw disk image")
		return
	}
	dir := filepath.Dir(s.imagePath(name))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.internalError(w, err)
		return
	}
	tmp, err := os.CreateTemp(dir, name+".upload-*")
	if err != nil {
		s.internalError(w, err)
		return
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(r.Body, MaxImageBytes+1))
	if err == nil && n > MaxImageBytes {
		err = fmt.Errorf("image is larger than %d bytes", int64(MaxImageBytes))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "", "upload failed: "+err.Error())
		return
	}
	info, err := image.Inspect(r.Context(), tmp.Name())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "", err.Error())
		return
	}
	if err := os.Rename(tmp.Name(), s.imagePath(name)); err != nil {
		s.internalError(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	var out *api.Image
	ev := s.store.EventOp(api.Event{Time: now, Kind: "Image", Name: name, Type: "Imported", Message: fmt.Sprintf("%s, sha256 %s", api.Bytes(info.Size).Human(), info.SHA256)})
	_, err = s.store.Images.Modify(r.Context(), name, func(im *api.Image) ([]clientv3.Op, error) {
		im.Source, im.Size, im.SHA256, im.Label, im.Ready = "upload", api.Bytes(info.Size), info.SHA256, info.Label, true
		out = im
		return []clientv3.Op{ev}, nil
	})
	if errors.Is(err, store.ErrNotFound) {
		out = &api.Image{Meta: api.Meta{Name: name, UID: store.NewID(), CreatedAt: now}, Source: "upload",
			Size: api.Bytes(info.Size), SHA256: info.SHA256, Label: info.Label, Ready: true}
		err = s.store.Images.Create(r.Context(), out, ev)
	}
	if err != nil {
		s.storeError(w, "image", name, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// downloadImage serves an image's data to agents (Range requests work, so
// an interrupted download resumes).
func (s *Server) downloadImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	im, err := s.store.Images.Get(r.Context(), name)
	if err != nil {
		s.storeError(w, "image", name, err)
		return
	}
	if !im.Ready {
		writeError(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("image %q has no data yet: import it with `ferry image import %s FILE`", name, name))
		return
	}
	f, err := os.Open(s.imagePath(name))
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("image %q is not stored on this server: %v", name, err))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		s.internalError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Ferry-Sha256", im.SHA256)
	http.ServeContent(w, r, name+".img", st.ModTime(), f)
}

func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	insts, _, err := s.store.Instances.List(ctx)
	if err != nil {
		s.internalError(w, err)
		return
	}
	for _, in := range insts {
		if in.Spec.Image == name {
			// Instances own copies, but keep the image while it is
			// referenced so a re-created disk can be cloned again.
			writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("image %q is used by instance %q", name, in.Name))
			return
		}
	}
	if err := s.store.Images.Delete(ctx, name, 0, s.store.EventOp(api.Event{Time: s.cfg.Now().UTC(), Kind: "Image", Name: name, Type: "Deleted"})); err != nil {
		s.storeError(w, "image", name, err)
		return
	}
	_ = os.Remove(s.imagePath(name))
	w.WriteHeader(http.StatusNoContent)
}
