package initagent

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// versionsFile is written into each data directory with the files: the
// version and creation time of each secret the set was made from, so that
// a refresh (a later process) never replaces a version with an older one.
// Its name starts with "..", which no file of the spec may, and it gets no
// symlink of its own: it is ..data/..versions.json.
const versionsFile = "..versions.json"

// maxVersionsFile bounds reading it: 50 references of the longest vault
// URL and name take well under this per secret.
const maxVersionsFile = 4 << 20

// versionsRecord is the JSON of versionsFile.
type versionsRecord struct {
	Secrets []recordedVersion `json:"secrets"`
}

// recordedVersion is one secret reference and what was written of it.
type recordedVersion struct {
	Vault string `json:"vault"`
	Name  string `json:"name"`
	// Ref is the version the reference pins, empty for the latest.
	Ref     string `json:"ref,omitempty"`
	Version string `json:"version"`
	// Created is Key Vault's attributes.created in Unix seconds; 0 when
	// not known.
	Created int64 `json:"created,omitempty"`
}

func (v recordedVersion) created() time.Time {
	if v.Created <= 0 {
		return time.Time{}
	}
	return time.Unix(v.Created, 0)
}

// encodeVersions is the record of the secrets a set of files was made
// from, in ids' order.
func encodeVersions(ids []spec.SecretID, results map[spec.SecretID]*fetchResult) []byte {
	rec := versionsRecord{Secrets: []recordedVersion{}}
	for _, id := range ids {
		r := results[id]
		if r == nil || r.err != nil {
			continue
		}
		v := recordedVersion{Vault: id.Vault, Name: id.Name, Ref: id.Version, Version: r.secret.Version}
		if !r.secret.Created.IsZero() {
			v.Created = r.secret.Created.Unix()
		}
		rec.Secrets = append(rec.Secrets, v)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		panic(err) // strings and ints always encode
	}
	return append(b, '\n')
}

// readVersions is the record of the set dir holds, by reference. A
// missing or unreadable record (files written by an older agent) is
// empty: every version's age is then unknown.
func readVersions(dir string) map[spec.SecretID]recordedVersion {
	f, err := os.Open(filepath.Join(dir, dataDirLink, versionsFile))
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxVersionsFile+1))
	if err != nil || len(b) > maxVersionsFile {
		return nil
	}
	var rec versionsRecord
	if json.Unmarshal(b, &rec) != nil {
		return nil
	}
	out := make(map[spec.SecretID]recordedVersion, len(rec.Secrets))
	for _, v := range rec.Secrets {
		out[spec.SecretID{Vault: v.Vault, Name: v.Name, Version: v.Ref}] = v
	}
	return out
}

// olderVersion is an answer created before the version the files hold.
type olderVersion struct {
	id          spec.SecretID
	got         keyvault.Secret
	onDisk      recordedVersion
	diskCreated time.Time
}

// olderThanDisk lists the answers for references not pinned to a version
// whose version differs from the one the files were made from and was
// created before it. An unknown creation time on either side is not older.
func olderThanDisk(ids []spec.SecretID, results map[spec.SecretID]*fetchResult, disk map[spec.SecretID]recordedVersion) []olderVersion {
	var out []olderVersion
	for _, id := range ids {
		r, ok := results[id]
		if id.Version != "" || !ok || r.err != nil {
			continue
		}
		d, ok := disk[id]
		if !ok || d.Version == r.secret.Version {
			continue
		}
		dc := d.created()
		if dc.IsZero() || r.secret.Created.IsZero() || !r.secret.Created.Before(dc) {
			continue
		}
		out = append(out, olderVersion{id: id, got: r.secret, onDisk: d, diskCreated: dc})
	}
	return out
}
