package broker

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// Drain closes the listeners and ends every connection at the rate asked:
// a 5.0 client gets DISCONNECT 0x8B Server shutting down, or 0x9C Use
// another server with the Server Reference when one is configured; a
// 3.1.1 client is closed, with no packet.
func TestDrainDisconnectsEveryClient(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  string
		code byte
	}{
		{"server shutting down", "", byte(packet.ServerShuttingDown)},
		{"use another server", "mqtt-1.example.net:1883", byte(packet.UseAnotherServer)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ServerReference = tc.ref
			s := startServer(t, &cfg)
			c5 := dialV5(t, s.addr, "five")
			lost := make(chan error, 1)
			dialV3(t, s.addr, "three", true, func(o *mqtt3.ClientOptions) {
				o.SetConnectionLostHandler(func(_ mqtt3.Client, err error) { lost <- err })
			})
			r := dialRaw(t, s.addr)
			r.connect(packet.V311, "raw-three")
			if !s.Accepting() || s.Draining() {
				t.Fatal("before Drain: not accepting, or draining")
			}

			const rate = 20.0 // three connections: the last one after 2/20 s
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Drain(ctx, rate); err != nil {
				t.Fatalf("Drain: %v", err)
			}
			if took := time.Since(start); took < 90*time.Millisecond {
				t.Errorf("3 connections drained in %v at %v/s: want about 100ms", took, rate)
			}
			select {
			case d := <-c5.disconnects:
				if d.ReasonCode != tc.code {
					t.Errorf("5.0 client: DISCONNECT %#x, want %#x", d.ReasonCode, tc.code)
				}
				ref := ""
				if d.Properties != nil {
					ref = d.Properties.ServerReference
				}
				if ref != tc.ref {
					t.Errorf("5.0 client: server reference %q, want %q", ref, tc.ref)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("5.0 client: no DISCONNECT")
			}
			select {
			case <-lost:
			case <-time.After(5 * time.Second):
				t.Fatal("3.1.1 client: connection not closed")
			}
			if pks := r.expectClosed(time.Second); len(pks) != 0 {
				t.Errorf("3.1.1 connection got %v before its close, want nothing", pks)
			}
			if s.Accepting() || !s.Draining() {
				t.Error("after Drain: accepting, or not draining")
			}
			if nc, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
				nc.Close()
				t.Error("a connection was accepted after Drain")
			}
			if got := len(s.Clients()); got != 0 {
				t.Errorf("%d clients left after Drain", got)
			}
		})
	}
}

// A shutdown is not a normal disconnection: the wills of drained clients
// are published ([MQTT-3.1.2-8]), here into a persistent session that is
// offline, which keeps them; sessions stay for their clients to take over.
func TestDrainPublishesWillsAndKeepsSessions(t *testing.T) {
	s := startServer(t, nil)
	expiry := uint32(600)
	persistent := func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	w := dialV5(t, s.addr, "watcher", persistent)
	w.subscribe(t, paho.SubscribeOptions{Topic: "will/#", QoS: 1})
	w.Disconnect(&paho.Disconnect{})
	eventually(t, 5*time.Second, func() error {
		for _, ss := range s.Sessions() {
			if ss.ClientID == "watcher" && !ss.Connected {
				return nil
			}
		}
		return fmt.Errorf("watcher not offline: %+v", s.Sessions())
	})
	dialV5(t, s.addr, "five", persistent, func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.WillMessage = &paho.WillMessage{Topic: "will/five", QoS: 1, Payload: []byte("gone")}
	})
	dialV3(t, s.addr, "three", true, func(o *mqtt3.ClientOptions) { o.SetWill("will/three", "gone", 1, false) })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Drain(ctx, 0); err != nil {
		t.Fatal(err)
	}
	var topics []string
	eventually(t, 5*time.Second, func() error {
		topics = topics[:0]
		s.mu.Lock()
		ss := s.sessions["watcher"]
		s.mu.Unlock()
		ss.mu.Lock()
		ss.queue.each(func(o *outMsg) { topics = append(topics, o.msg.Topic) })
		ss.mu.Unlock()
		if len(topics) != 2 {
			return fmt.Errorf("watcher's queue: %v", topics)
		}
		return nil
	})
	slices.Sort(topics)
	if !slices.Equal(topics, []string{"will/five", "will/three"}) {
		t.Fatalf("wills queued: %v", topics)
	}
	// The persistent sessions stay, offline; the 3.1.1 clean session ends.
	var ids []string
	for _, ss := range s.Sessions() {
		if ss.Connected {
			t.Errorf("%s still connected", ss.ClientID)
		}
		ids = append(ids, ss.ClientID)
	}
	if !slices.Equal(ids, []string{"five", "watcher"}) {
		t.Fatalf("sessions after Drain: %v, want five and watcher", ids)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if left := s.WaitHandedOff(short); left != 2 {
		t.Fatalf("WaitHandedOff: %d sessions left, want 2 (nobody took them over)", left)
	}
}
