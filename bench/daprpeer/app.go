package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/dapr/go-sdk/service/common"
	daprd "github.com/dapr/go-sdk/service/grpc"
	"google.golang.org/grpc"
)

// appServer is the app's gRPC service, which daprd delivers commands to.
type appServer struct {
	svc common.Service
	// failed receives the service's error if it stops serving on its own;
	// done is closed once it has stopped.
	failed chan error
	done   chan struct{}
}

// startApp serves the go-sdk's gRPC service on ln with one subscription per
// plan entry, each raw: the bench publishes bare commands, not CloudEvents.
// It closes ln if it fails.
func startApp(ln net.Listener, p plan, h *handler) (*appServer, error) {
	hooks := bulkHooks{h: h}
	if p.bulk != nil {
		hooks.config = &pb.BulkSubscribeConfig{Enabled: true, MaxMessagesCount: p.bulk.maxMessages, MaxAwaitDurationMs: p.bulk.awaitMS}
	}
	svc := daprd.NewServiceWithListener(ln, grpc.UnaryInterceptor(hooks.intercept))
	for _, s := range p.subs {
		sub := &common.Subscription{PubsubName: s.Component, Topic: s.Topic, Metadata: map[string]string{"rawPayload": "true"}}
		if err := svc.AddTopicEventHandler(sub, h.onEvent); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("subscription %s: %w", s.Component, err)
		}
	}
	a := &appServer{svc: svc, failed: make(chan error, 1), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		if err := svc.Start(); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			a.failed <- fmt.Errorf("app service: %w", err)
		}
	}()
	return a, nil
}

// stop stops the service and waits for it; daprd is gone by then, so there
// is nothing in flight to wait for.
func (a *appServer) stop() {
	_ = a.svc.Stop()
	<-a.done
}

// bulkHooks fills in what the go-sdk's gRPC service lacks for bulk
// subscribe (dapr/go-sdk#800): it answers OnBulkTopicEvent, which the SDK
// refuses as unimplemented, and, when config is set, asks for bulk delivery
// in the subscriptions the SDK lists, which have no field for it.
type bulkHooks struct {
	h      *handler
	config *pb.BulkSubscribeConfig
}

// intercept is a gRPC unary interceptor on the SDK's server.
func (b bulkHooks) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	switch info.FullMethod {
	case pb.AppCallback_OnBulkTopicEvent_FullMethodName, pb.AppCallbackAlpha_OnBulkTopicEventAlpha1_FullMethodName:
		if in, ok := req.(*pb.TopicEventBulkRequest); ok {
			return b.h.onBulk(ctx, in), nil
		}
	case pb.AppCallback_ListTopicSubscriptions_FullMethodName:
		out, err := next(ctx, req)
		if list, ok := out.(*pb.ListTopicSubscriptionsResponse); ok && err == nil && b.config != nil {
			for _, s := range list.GetSubscriptions() {
				s.BulkSubscribe = b.config
			}
		}
		return out, err
	}
	return next(ctx, req)
}
