package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/pki"
	"github.com/ferrycluster/ferry/internal/store"
)

// Paths of cluster-wide secrets and records below the store prefix.
const (
	caPath         = "pki/ca"
	revokedDir     = "pki/revoked/"
	tokensDir      = "auth/tokens/"
	bootstrapPath  = "auth/bootstrapped"
	joinTokensDir  = "jointokens/"
	defaultImage   = "demo"
	serverCertLife = 365 * 24 * time.Hour
)

// caRecord is the cluster CA as stored in etcd. The key lives in etcd so
// that every server of a multi-server control plane can sign node
// certificates; protect etcd accordingly (it holds the cluster's secrets).
type caRecord struct {
	CertPEM string `json:"certPEM"`
	KeyPEM  string `json:"keyPEM"`
}

type tokenRecord struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

type joinTokenRecord struct {
	SecretHash string    `json:"secretHash"`
	ExpiresAt  time.Time `json:"expiresAt"`
	Used       bool      `json:"used"`
	UsedBy     string    `json:"usedBy,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
}

type revokedRecord struct {
	Node      string    `json:"node"`
	RevokedAt time.Time `json:"revokedAt"`
}

// bootstrap makes sure the cluster has a CA, an admin token and the demo
// image record. Each is created in one transaction that only succeeds if it
// does not exist yet, so concurrent first starts of several servers agree.
func (s *Server) bootstrap(ctx context.Context) error {
	now := s.cfg.Now()
	var rec caRecord
	if _, err := s.store.GetJSON(ctx, caPath, &rec); errors.Is(err, store.ErrNotFound) {
		ca, err := pki.NewCA("ferry cluster CA", now, 0)
		if err != nil {
			return err
		}
		key, err := ca.KeyPEM()
		if err != nil {
			return err
		}
		rec = caRecord{CertPEM: string(ca.CertPEM()), KeyPEM: string(key)}
		if err := s.store.CreateJSON(ctx, caPath, rec); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("server: store cluster CA: %w", err)
		}
		if _, err := s.store.GetJSON(ctx, caPath, &rec); err != nil {
			return fmt.Errorf("server: read cluster CA: %w", err)
		}
		s.log.Info("created cluster CA")
	} else if err != nil {
		return fmt.Errorf("server: read cluster CA: %w", err)
	}
	ca, err := pki.LoadCA([]byte(rec.CertPEM), []byte(rec.KeyPEM))
	if err != nil {
		return fmt.Errorf("server: cluster CA in etcd: %w", err)
	}
	s.ca = ca
	if err := os.WriteFile(filepath.Join(s.cfg.DataDir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("server: write ca.crt: %w", err)
	}
	s.cert, err = ca.IssueServerCert(s.certHosts(), now, serverCertLife)
	if err != nil {
		return fmt.Errorf("server: issue server certificate: %w", err)
	}

	token, hash, err := pki.NewAPIToken()
	if err != nil {
		return err
	}
	tokOp, err := s.store.PutJSONOp(tokensDir+hash, tokenRecord{Name: "admin", CreatedAt: now})
	if err != nil {
		return err
	}
	err = s.store.CreateJSON(ctx, bootstrapPath, map[string]any{"at": now, "by": s.cfg.ID}, tokOp)
	switch {
	case err == nil:
		s.adminToken = token
		s.log.Warn("created the admin API token; it is shown only now, store it safely", "token", token)
		if s.cfg.AdminTokenFile != "" {
			if err := os.WriteFile(s.cfg.AdminTokenFile, []byte(token+"\n"), 0o600); err != nil {
				return fmt.Errorf("server: write admin token file: %w", err)
			}
		}
	case errors.Is(err, store.ErrExists):
	default:
		return fmt.Errorf("server: create admin token: %w", err)
	}

	img := &api.Image{Meta: api.Meta{Name: defaultImage, UID: store.NewID(), CreatedAt: now}, Source: "builtin:demo"}
	if err := s.store.Images.Create(ctx, img); err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("server: register demo image: %w", err)
	}
	return nil
}

// checkToken reports whether token is a valid API token, and the name of
// its user.
func (s *Server) checkToken(ctx context.Context, token string) (string, bool, error) {
	var rec tokenRecord
	_, err := s.store.GetJSON(ctx, tokensDir+pki.HashAPIToken(token), &rec)
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	return rec.Name, err == nil, err
}
