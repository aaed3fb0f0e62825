package keyvault

import (
	"errors"
	"fmt"
	"io"

	"encoding/json"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// UpstreamCounter is told of a Reader's traffic to Entra ID and Key Vault.
// Its methods are called concurrently.
type UpstreamCounter interface {
	// UpstreamRequest counts one HTTPS request (a retry is a request).
	UpstreamRequest()
	// UpstreamBytes counts response body bytes read.
	UpstreamBytes(n int64)
}

type countingBody struct {
	io.ReadCloser
	upstream UpstreamCounter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.upstream.UpstreamBytes(int64(n))
	}
	return n, err
}

// Upstream is what the service answered to the failed read: the HTTP
// status, 0 when no answer came (a transport error, a time limit), and its
// error code: Key Vault's ("SecretNotFound", "Forbidden") or Entra ID's
// first AADSTS code ("AADSTS700213"). Programs that decide between
// retrying and giving up read it instead of the error's text.
func (e *ReadError) Upstream() (status int, code string) {
	var afe *azidentity.AuthenticationFailedError
	var re *azcore.ResponseError
	switch {
	case errors.As(e.err, &afe):
		if afe.RawResponse == nil {
			return 0, ""
		}
		if ee, ok := aadstsCode(afe.RawResponse); ok {
			return afe.RawResponse.StatusCode, fmt.Sprintf("AADSTS%d", ee.Codes[0])
		}
		return afe.RawResponse.StatusCode, ""
	case errors.As(e.err, &re):
		code = re.ErrorCode
		if code == "" && re.RawResponse != nil {
			var body kvError
			if b, err := runtime.Payload(re.RawResponse); err == nil && json.Unmarshal(b, &body) == nil {
				code = body.Error.Code
			}
		}
		return re.StatusCode, code
	}
	return 0, ""
}

// SignInFailed reports whether the read failed at the token exchange with
// Entra ID rather than at Key Vault.
func (e *ReadError) SignInFailed() bool {
	var afe *azidentity.AuthenticationFailedError
	return errors.As(e.err, &afe)
}
