package httpapi

// PrefersText is exported for the content-negotiation table test.
var PrefersText = prefersText
