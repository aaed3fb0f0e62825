package secretform

import "github.com/kvinject/kvinject/internal/spec"

// secret is what the forms read of a secret version.
type secret struct {
	Value       string
	ContentType string
}

// Forms takes what references select out of secret values: a JSON property
// (Extract), or a certificate form of a certificate-backed secret. It
// parses each certificate bundle once. The zero value is ready to use; it
// is not safe for concurrent use.
type Forms struct{ bundles bundleCache }

// Select returns what path (a reference's # part, "" for the whole value)
// selects of the value and content type that secret id holds. Its errors
// are *PropertyError, or *BundleError for a bundle that does not parse;
// neither quotes the value.
func (f *Forms) Select(id spec.SecretID, value, contentType, path string) ([]byte, error) {
	s := secret{Value: value, ContentType: contentType}
	if !isCertRef(s, path) {
		return Extract(value, path)
	}
	if f.bundles == nil {
		f.bundles = bundleCache{}
	}
	return f.bundles.form(id, s, path)
}
