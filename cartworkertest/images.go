package cartworkertest

import (
	"context"
	"errors"
	"fmt"
	"os"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"

	"github.com/cartworker/cartworker/deployments"
)

// The variables that name the stack's images, as in the repository's
// scripts and Compose file.
const (
	NATSImageVar   = "NATS_IMAGE"
	RedisImageVar  = "REDIS_IMAGE"
	DaprdImageVar  = "DAPRD_IMAGE"
	WorkerImageVar = "WORKER_IMAGE"
)

// Image returns the image of one part of the stack, by its variable
// (NATSImageVar, ...): the variable's value in the environment, else its
// default in deployments/images.env, which holds the official names (a
// machine with a registry pulls them as usual).
func Image(variable string) (string, error) {
	if v := os.Getenv(variable); v != "" {
		return v, nil
	}
	defaults, err := deployments.Images()
	if err != nil {
		return "", err
	}
	img, ok := defaults[variable]
	if !ok {
		return "", fmt.Errorf("cartworkertest: %s is not set and has no default in deployments/images.env", variable)
	}
	return img, nil
}

// stackImages are the images a stack runs.
type stackImages struct{ nats, redis, daprd string }

func resolveImages() (stackImages, error) {
	var out stackImages
	var errs []error
	for _, img := range []struct {
		variable string
		dst      *string
	}{{NATSImageVar, &out.nats}, {RedisImageVar, &out.redis}, {DaprdImageVar, &out.daprd}} {
		v, err := Image(img.variable)
		*img.dst = v
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// dockerClient connects to the Docker daemon testcontainers uses, saying
// what to do when there is none. opts replace the daemon's address (tests).
func dockerClient(ctx context.Context, opts ...client.Opt) (*testcontainers.DockerClient, error) {
	const hint = "is Docker running? Start it (in the cartworker repository: scripts/ensure-docker.sh) or point DOCKER_HOST at it"
	cli, err := testcontainers.NewDockerClientWithOpts(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("cartworkertest: Docker is not reachable (%s): %w", hint, err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("cartworkertest: Docker is not reachable (%s): %w", hint, err)
	}
	return cli, nil
}

// ensureImages makes sure every image is on this machine: it pulls a
// missing one, as testcontainers would, and when that fails says which
// image and how to build it, rather than leaving a registry error alone.
func ensureImages(ctx context.Context, cli *testcontainers.DockerClient, images ...string) error {
	var errs []error
	for _, img := range images {
		_, err := cli.ImageInspect(ctx, img)
		if err == nil {
			continue
		}
		if !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("cartworkertest: inspect image %s: %w", img, err))
			continue
		}
		if err := pull(ctx, cli, img); err != nil {
			errs = append(errs, fmt.Errorf("cartworkertest: image %s is not on this machine and pulling it failed "+
				"(no registry reachable?): build it with `make images` in the cartworker repository, "+
				"or set its variable (NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE, WORKER_IMAGE) to an image you have: %w", img, err))
		}
	}
	return errors.Join(errs...)
}

func pull(ctx context.Context, cli *testcontainers.DockerClient, img string) error {
	resp, err := cli.ImagePull(ctx, img, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer resp.Close()
	return resp.Wait(ctx)
}
