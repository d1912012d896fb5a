package awsauth

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/target/awsiot"
)

// AWS IoT Core's bounds on disconnectAfterInSeconds and refreshAfterInSeconds.
const (
	AWSMinSeconds = 300
	AWSMaxSeconds = 86400
)

// DefaultLeeway is the clock skew allowed on exp (and iat).
const DefaultLeeway = 30 * time.Second

// Config is the authorizer's configuration, from its Lambda environment (FromEnv).
type Config struct {
	// Issuer is the iss tokens must carry: tokensvc's issuer URL.
	Issuer string
	// Endpoint is the aud tokens must carry: the AWS IoT data endpoint (the awsiot
	// hub's hostname).
	Endpoint string
	// JWKSURL is where the issuer publishes its keys (GET /.well-known/jwks.json);
	// fetched at start, cached, refreshed every RefreshKeys and on an unknown kid.
	JWKSURL string
	// Keys is instead the issuer's keys in the configuration: a JWK Set document, or
	// PEM public keys or certificates each with a "kid" header.
	Keys string
	// TokenKeyName is the authorizer's token key name (the hub's tokenKeyName).
	TokenKeyName string
	// Region and AccountID make the policy's resource ARNs.
	Region, AccountID string
	// TopicTemplate and SubscribeTemplates are the hub's; {deviceId} stands for the
	// token's subject.
	TopicTemplate      string
	SubscribeTemplates []string
	// Leeway is the clock skew allowed on exp.
	Leeway time.Duration
	// RefreshKeys is how often the JWKS is fetched again (default 15 minutes);
	// RefetchUnknown the least time between fetches for an unknown kid (default 10 s).
	RefreshKeys, RefetchUnknown time.Duration
	// MinSeconds and MaxSeconds bound disconnectAfterInSeconds and
	// refreshAfterInSeconds; AWS's bounds (AWSMinSeconds, AWSMaxSeconds) by default.
	// Only tests lower MinSeconds, to see a disconnection in seconds.
	MinSeconds, MaxSeconds int
}

// Environment variable names FromEnv reads.
const (
	EnvIssuer             = "TOKENSVC_ISSUER"
	EnvJWKSURL            = "TOKENSVC_JWKS_URL"
	EnvKeys               = "TOKENSVC_ISSUER_KEYS"
	EnvEndpoint           = "AWS_IOT_ENDPOINT"
	EnvTokenKeyName       = "TOKEN_KEY_NAME"
	EnvRegion             = "AWS_REGION" // set by the Lambda runtime
	EnvAccountID          = "AWS_ACCOUNT_ID"
	EnvTopicTemplate      = "TOPIC_TEMPLATE"
	EnvSubscribeTemplates = "SUBSCRIBE_TEMPLATES"
	EnvLeeway             = "LEEWAY_SECONDS"
)

// FromEnv reads a Config from the environment getenv reads, defaults filled in.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		Issuer:        getenv(EnvIssuer),
		Endpoint:      getenv(EnvEndpoint),
		JWKSURL:       getenv(EnvJWKSURL),
		Keys:          getenv(EnvKeys),
		TokenKeyName:  getenv(EnvTokenKeyName),
		Region:        getenv(EnvRegion),
		AccountID:     getenv(EnvAccountID),
		TopicTemplate: getenv(EnvTopicTemplate),
	}
	if s := getenv(EnvSubscribeTemplates); s != "" {
		for f := range strings.SplitSeq(s, ",") {
			c.SubscribeTemplates = append(c.SubscribeTemplates, strings.TrimSpace(f))
		}
	}
	if s := getenv(EnvLeeway); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 300 {
			return Config{}, fmt.Errorf("%s: 0 to 300 seconds", EnvLeeway)
		}
		c.Leeway = time.Duration(n) * time.Second
	} else {
		c.Leeway = DefaultLeeway
	}
	c.defaults()
	return c, c.Validate()
}

func (c *Config) defaults() {
	if c.TopicTemplate == "" {
		c.TopicTemplate = awsiot.DefaultTopicTemplate
	}
	if c.MinSeconds == 0 {
		c.MinSeconds = AWSMinSeconds
	}
	if c.MaxSeconds == 0 {
		c.MaxSeconds = AWSMaxSeconds
	}
	if c.RefreshKeys == 0 {
		c.RefreshKeys = 15 * time.Minute
	}
	if c.RefetchUnknown == 0 {
		c.RefetchUnknown = 10 * time.Second
	}
}

// Validate checks c; its errors name the environment variable at fault.
func (c Config) Validate() error {
	var errs []error
	need := func(v, name string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	need(c.Issuer, EnvIssuer)
	need(c.Endpoint, EnvEndpoint)
	need(c.TokenKeyName, EnvTokenKeyName)
	need(c.Region, EnvRegion)
	need(c.AccountID, EnvAccountID)
	switch {
	case c.JWKSURL == "" && c.Keys == "":
		errs = append(errs, fmt.Errorf("one of %s and %s is required", EnvJWKSURL, EnvKeys))
	case c.JWKSURL != "" && c.Keys != "":
		errs = append(errs, fmt.Errorf("%s and %s exclude each other", EnvJWKSURL, EnvKeys))
	case c.JWKSURL != "":
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: not an http(s) URL", EnvJWKSURL))
		}
	}
	if c.AccountID != "" && (len(c.AccountID) != 12 || strings.Trim(c.AccountID, "0123456789") != "") {
		errs = append(errs, fmt.Errorf("%s: 12 digits", EnvAccountID))
	}
	if strings.ContainsAny(c.Region, ":*?/ ") {
		errs = append(errs, fmt.Errorf("%s: not a region name", EnvRegion))
	}
	if err := awsiot.CheckTemplate(c.TopicTemplate, false); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvTopicTemplate, err))
	}
	for _, f := range c.SubscribeTemplates {
		if err := awsiot.CheckTemplate(f, true); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", EnvSubscribeTemplates, f, err))
		}
	}
	if c.MinSeconds < 1 || c.MaxSeconds < c.MinSeconds {
		errs = append(errs, errors.New("MinSeconds and MaxSeconds: 1 <= MinSeconds <= MaxSeconds"))
	}
	return errors.Join(errs...)
}
