package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
)

// static_http: `args CODE ...` prints its argv and FOO, exits CODE;
// `serve DIR` serves DIR over HTTP on 127.0.0.1:0 and prints "listening PORT".
func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(3)
		}
		fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
		http.Serve(ln, http.FileServer(http.Dir(os.Args[2])))
		return
	}
	for i, a := range os.Args {
		fmt.Printf("argv[%d]=%s\n", i, a)
	}
	fmt.Printf("FOO=%s\n", os.Getenv("FOO"))
	code, _ := strconv.Atoi(os.Args[len(os.Args)-1])
	os.Exit(code)
}
