package testpeer_test

import (
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// TestBrokerChecksTokensLikeIoTHub proves the test broker refuses what IoT Hub refuses;
// without it, the agent tests' "nothing refused" would prove nothing.
func TestBrokerChecksTokensLikeIoTHub(t *testing.T) {
	ca := testpeer.NewCA(t, "ca")
	key := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210fedcba9876543210")
	b := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: ca.Issue(t, testpeer.Hub).TLS,
		Keys: map[string][]byte{"dev-1": key, "dev-2": other}})
	now := time.Now()
	se := now.Add(time.Hour).Unix()
	user := testpeer.Hub + "/dev-1/?api-version=" + signer.IoTHubAPIVersion
	res := signer.IoTHubDeviceResource(testpeer.Hub, "dev-1")
	tests := []struct {
		name, client, user, password, want string
	}{
		{"valid", "dev-1", user, signer.SignAt(res, key, se, ""), ""},
		{"expired", "dev-1", user, signer.SignAt(res, key, now.Add(-time.Second).Unix(), ""), testpeer.RefusedExpired},
		{"wrong key", "dev-1", user, signer.SignAt(res, other, se, ""), testpeer.RefusedSignature},
		{"another device's token", "dev-1", user, signer.SignAt(signer.IoTHubDeviceResource(testpeer.Hub, "dev-2"), key, se, ""), testpeer.RefusedScope},
		{"policy token", "dev-1", user, signer.SignAt(res, key, se, "device"), testpeer.RefusedScope},
		{"hub-wide token", "dev-1", user, signer.SignAt(testpeer.Hub, key, se, ""), testpeer.RefusedScope},
		{"user name without api-version", "dev-1", testpeer.Hub + "/dev-1/", signer.SignAt(res, key, se, ""), testpeer.RefusedUsername},
		{"user name with the short hub name", "dev-1", testpeer.HubName + "/dev-1/?api-version=" + signer.IoTHubAPIVersion, signer.SignAt(res, key, se, ""), testpeer.RefusedUsername},
		{"unknown device", "dev-9", testpeer.Hub + "/dev-9/?api-version=" + signer.IoTHubAPIVersion, signer.SignAt(res, key, se, ""), testpeer.RefusedUnknown},
		{"not a SAS token", "dev-1", user, "hunter2", testpeer.RefusedMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := b.Authenticate(tt.client, tt.user, tt.password, now); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
