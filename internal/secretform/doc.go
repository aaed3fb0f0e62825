// Package secretform takes what a reference selects out of a secret value:
// a JSON property (Extract), a certificate form of a certificate-backed
// secret (#key, #cert, #chain, #fullchain, #ca, #pfx), or a rendered
// template (Render). Each is bounded in the work a hostile value can cost,
// and its errors never quote the value.
package secretform
