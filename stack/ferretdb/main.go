// Command ferretdb-sqlite runs FerretDB v1 (MongoDB wire protocol) with its SQLite backend.
//
// It exists because `go install github.com/FerretDB/FerretDB/cmd/ferretdb` builds a binary that
// panics at start (it wants generated version files, FerretDB#2982); the embeddable package
// github.com/FerretDB/FerretDB/ferretdb does not.
//
// Usage: ferretdb-sqlite -listen 127.0.0.1:27017 -data /abs/dir [-tls-cert F -tls-key F [-tls-ca F]]
//
// With -tls-cert and -tls-key the address speaks TLS only (no plain listener); with -tls-ca too,
// every client must present a certificate signed by that CA (FerretDB's SQLite backend checks no
// passwords, so the client certificate is the credential).
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
	tlsCert := flag.String("tls-cert", "", "server certificate (PEM); with -tls-key: TLS only")
	tlsKey := flag.String("tls-key", "", "server private key (PEM)")
	tlsCA := flag.String("tls-ca", "", "CA (PEM) that client certificates must be signed by; required client certificates")
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

	if (*tlsCert == "") != (*tlsKey == "") || (*tlsCA != "" && *tlsCert == "") {
		fmt.Fprintln(os.Stderr, "ferretdb-sqlite: -tls-cert and -tls-key go together; -tls-ca needs them")
		os.Exit(2)
	}
	listener := ferretdb.ListenerConfig{TCP: *listen}
	if *tlsCert != "" {
		listener = ferretdb.ListenerConfig{TLS: *listen, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, TLSCAFile: *tlsCA}
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  listener,
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
