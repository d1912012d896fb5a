// Command awsauthorizer is the AWS IoT Core custom authorizer for tokensvc's awsiot
// hubs, as an AWS Lambda function (runtime provided.al2023). It verifies the JWT a
// device presents against tokensvc's published issuer keys and answers with a policy
// for that device's client ID and topics only (package awsauth). Configuration comes
// from the function's environment: see awsauth.FromEnv and the README.
//
// Build: GOOS=linux GOARCH=arm64 go build -tags lambda.norpc -o bootstrap ./cmd/awsauthorizer
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/tokensvc/tokensvc/internal/awsauth"
)

func main() {
	a, err := build(context.Background(), os.Getenv, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "awsauthorizer:", err)
		os.Exit(1)
	}
	lambda.Start(a.Handle)
}

// build reads the configuration and builds the authorizer, logging JSON to out.
func build(ctx context.Context, getenv func(string) string, out io.Writer) (*awsauth.Authorizer, error) {
	c, err := awsauth.FromEnv(getenv)
	if err != nil {
		return nil, err
	}
	keys, err := awsauth.NewKeySource(ctx, c, nil)
	if err != nil {
		return nil, err
	}
	return awsauth.New(c, keys, nil, slog.New(slog.NewJSONHandler(out, nil)))
}
