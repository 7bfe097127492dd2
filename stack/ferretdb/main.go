// Command ferretdb-sqlite runs FerretDB v1 (MongoDB wire protocol) with its SQLite backend.
//
// It exists because `go install github.com/FerretDB/FerretDB/cmd/ferretdb` builds a binary that
// panics at start (it wants generated version files, FerretDB#2982); the embeddable package
// github.com/FerretDB/FerretDB/ferretdb does not.
//
// Usage: ferretdb-sqlite -listen 127.0.0.1:27017 -data /abs/dir
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data", "", "directory for the SQLite databases (created if missing)")
	debug := flag.Bool("debug", false, "log at debug level")
	flag.Parse()

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb-sqlite: -data is required")
		os.Exit(2)
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		logger.Error("bad data dir", "err", err)
		os.Exit(1)
	}
	if err = os.MkdirAll(dir, 0o755); err != nil {
		logger.Error("cannot create data dir", "err", err)
		os.Exit(1)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/", // the trailing slash is required: it names a directory
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "err", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	logger.Info("FerretDB listening", "uri", f.MongoDBURI(), "data", dir)
	if err = f.Run(ctx); err != nil {
		logger.Error("FerretDB stopped with error", "err", err)
		os.Exit(1)
	}
	logger.Info("FerretDB stopped")
}
