package log

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func ExampleLog_Update() {
	dir, err := os.MkdirTemp("", "comet-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	l, err := Open(Config{Path: filepath.Join(dir, "comet.db")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) // stamped by the Raft leader
	_, err = l.Update(1, func(tx *Tx) error {
		if err := tx.InitEpoch("e1"); err != nil {
			return err
		}
		for _, id := range []string{"k1", "k1", "k2"} {
			res, err := tx.Append("chat.room", id, []byte(`"hi"`), now)
			if err != nil {
				return err
			}
			fmt.Println(res.Offset, res.Duplicate)
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	info, msgs, _ := l.Read("chat.room", 1, 10)
	fmt.Printf("%+v %d\n", info, len(msgs))
	// Output:
	// 1 false
	// 1 true
	// 2 false
	// {Epoch:e1 First:1 Next:3} 2
}
