package main

import (
	"context"
	"net"
	"testing"
	"time"

	pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
)

// startTestApp serves the app for plan p on a loopback port and returns a
// client of it, as daprd is one.
func startTestApp(t *testing.T, p plan, h *handler) (pb.AppCallbackClient, pb.AppCallbackAlphaClient) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app, err := startApp(ln, p, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewAppCallbackClient(conn), pb.NewAppCallbackAlphaClient(conn)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAppListsRawSubscriptions(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		cfg := testConfig()
		cfg.bulk = bulk
		app, _ := startTestApp(t, newPlan(cfg), &handler{})
		res, err := app.ListTopicSubscriptions(testContext(t), &emptypb.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		subs := res.GetSubscriptions()
		if len(subs) != cfg.partitions {
			t.Fatalf("bulk %v: %d subscriptions", bulk, len(subs))
		}
		for _, s := range subs {
			if s.GetMetadata()["rawPayload"] != "true" {
				t.Errorf("bulk %v: %s/%s is not raw", bulk, s.GetPubsubName(), s.GetTopic())
			}
			b := s.GetBulkSubscribe()
			if b.GetEnabled() != bulk || (bulk && (b.GetMaxMessagesCount() != 100 || b.GetMaxAwaitDurationMs() != 1)) {
				t.Errorf("bulk %v: %s bulk subscribe %v", bulk, s.GetPubsubName(), b)
			}
		}
	}
}

func TestAppAnswersSingleAndBulkEvents(t *testing.T) {
	h, ev, _ := newTestHandler(t)
	cfg := testConfig()
	cfg.bulk = true
	app, alpha := startTestApp(t, newPlan(cfg), h)
	ctx := testContext(t)

	subject, body := stored(t, cacheCmd("k1", "c1"))
	mctx := metadata.AppendToOutgoingContext(ctx, "topic", subject)
	res, err := app.OnTopicEvent(mctx, &pb.TopicEventRequest{
		PubsubName: "commands-p03", Topic: "cart.pcmd.3.*.*", Data: body, DataContentType: "application/octet-stream",
	})
	if err != nil || res.GetStatus() != pb.TopicEventResponse_SUCCESS {
		t.Fatalf("OnTopicEvent = %v, %v", res, err)
	}
	bulk := &pb.TopicEventBulkRequest{PubsubName: "commands-p03", Topic: "cart.pcmd.3.*.*",
		Entries: []*pb.TopicEventBulkRequestEntry{bulkEntry(t, "e1", addCmd("a1", "c1", "I1"))}}
	bres, err := app.OnBulkTopicEvent(ctx, bulk)
	if err != nil || len(bres.GetStatuses()) != 1 || bres.GetStatuses()[0].GetStatus() != pb.TopicEventResponse_SUCCESS {
		t.Fatalf("OnBulkTopicEvent = %v, %v", bres, err)
	}
	// daprd falls back to the alpha method when the stable one is missing,
	// so the app answers it too.
	bulk.Entries = []*pb.TopicEventBulkRequestEntry{bulkEntry(t, "e2", addCmd("a2", "c1", "I2"))}
	//lint:ignore SA1019 daprd still calls it, so the app must answer it
	if bres, err = alpha.OnBulkTopicEventAlpha1(ctx, bulk); err != nil || bres.GetStatuses()[0].GetStatus() != pb.TopicEventResponse_SUCCESS {
		t.Fatalf("OnBulkTopicEventAlpha1 = %v, %v", bres, err)
	}
	if got := ev.outcomes(); len(got) != 3 {
		t.Fatalf("events %v", got)
	}
}
