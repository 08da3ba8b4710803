package config

import (
	"bytes"
	"errors"
	"flag"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/telemetry"
)

func TestTelemetrySettings(t *testing.T) {
	c, err := Load(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	require.False(t, c.Telemetry.Exporting(), "no endpoint, no export")
	require.Equal(t, telemetry.DefaultServiceName, c.Telemetry.ServiceName)
	require.Equal(t, telemetry.DefaultProtocol, c.Telemetry.Protocol)
	require.Equal(t, telemetry.DefaultSampler, c.Telemetry.Sampler)

	c, err = Load([]string{"-otel-traces-sampler-arg", "0.5"}, env(map[string]string{
		"OTEL_SERVICE_NAME":                  "cw-eu",
		"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://collector:4318",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "grpc",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
		"OTEL_TRACES_SAMPLER":                "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":            "0.1",
		"OTEL_SDK_DISABLED":                  "TRUE",
	}), &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, telemetry.Config{
		ServiceName: "cw-eu", Endpoint: "http://collector:4318", TracesEndpoint: "http://traces:4318/v1/traces",
		Protocol: "grpc", TracesProtocol: "http/protobuf", Sampler: "parentbased_traceidratio", SamplerArg: "0.5",
		Disabled: true,
	}, c.Telemetry)
	require.False(t, c.Telemetry.Exporting())
}

func TestBadTelemetryValuesNameTheVariable(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://x"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"},
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Load(nil, env(tt.env), &bytes.Buffer{})
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestHelpListsTelemetrySettings(t *testing.T) {
	var out bytes.Buffer
	_, err := Load([]string{"-h"}, env(nil), &out)
	require.True(t, errors.Is(err, flag.ErrHelp))
	for _, v := range []string{"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_SDK_DISABLED", `default "cartworker"`} {
		require.Contains(t, out.String(), v)
	}
}
