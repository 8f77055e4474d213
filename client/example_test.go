package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/comethq/comet/client"
)

func Example() {
	store, err := client.NewFileStore("positions.json") // resume after a restart
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	c, err := client.New(client.Config{
		URLs:  []string{"ws://10.0.0.1:8080/ws", "ws://10.0.0.2:8080/ws"},
		Store: store,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Subscribe(ctx, "chat", func(m client.Message) {
		fmt.Printf("%s %d: %s\n", m.Channel, m.Offset, m.Data)
	}, client.OnSubscribed(func(i client.SubscribedInfo) {
		if !i.Recovered {
			log.Printf("chat: messages were lost; going on from offset %d", i.First)
		}
	}))
	if err != nil {
		log.Fatal(err)
	}
	ack, err := c.Publish(ctx, "chat", map[string]string{"text": "hi"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored at offset", ack.Offset)
}

func ExampleClient_PublishAsync() {
	c, err := client.New(client.Config{URLs: []string{"ws://10.0.0.1:8080/ws"}, MaxPublishesInFlight: 1024})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var futures []*client.PublishFuture
	for i := 0; i < 10000; i++ {
		f, err := c.PublishAsync(ctx, "ticks", map[string]int{"n": i}) // waits when 1024 are in flight
		if err != nil {
			log.Fatal(err)
		}
		futures = append(futures, f)
	}
	select {
	case <-c.PublishAsyncComplete():
	case <-ctx.Done():
		log.Fatal("not all acknowledged in time")
	}
	for _, f := range futures {
		if err := f.Err(); err != nil {
			log.Printf("publish %s: %v", f.ID(), err)
		}
	}
}
