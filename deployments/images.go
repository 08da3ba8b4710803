// Package deployments holds the files that run cartworker outside go test
// (Compose, Kubernetes, Dapr components, image Dockerfiles). Its only Go
// embeds what Go code that starts or checks the stack needs: the default
// container images, images.env, and the Dapr component and configuration
// daprd is given.
package deployments

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"
)

//go:embed images.env
var imagesEnv string

var (
	imageName  = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	imageValue = regexp.MustCompile(`^[^\s"'$#\\]+$`)
)

// Images returns the default images of images.env by variable name
// (NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE, WORKER_IMAGE). It fails on a line
// that the shell scripts and Docker Compose could read differently.
func Images() (map[string]string, error) { return parseImages(imagesEnv) }

func parseImages(text string) (map[string]string, error) {
	out := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || !imageName.MatchString(name) || !imageValue.MatchString(value) {
			return nil, fmt.Errorf("deployments/images.env:%d: want NAME=value with no quotes, spaces or $: %q", i+1, line)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("deployments/images.env:%d: %s set twice", i+1, name)
		}
		out[name] = value
	}
	return out, nil
}
