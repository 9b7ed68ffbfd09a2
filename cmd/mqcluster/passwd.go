package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/mqcluster/mqcluster/broker/auth"
)

const passwdUsage = `usage: mqcluster passwd [-c] [-b] [-D] [--argon2id|--bcrypt] file user [password]

Adds, changes or deletes a user of a password file, like mosquitto_passwd.
Without -b the password is asked twice on the terminal (or read from the
first two lines of standard input when that is not a terminal).

  -c          create the file, replacing any existing one
  -b          batch mode: the password is the last argument
  -D          delete the user
  --argon2id  hash with argon2id (the default)
  --bcrypt    hash with bcrypt

The file is replaced atomically with mode 0600; a running broker applies
the change to new connections without a restart.
`

// passwdMain is "mqcluster passwd": it edits a password file.
func passwdMain(args []string) error {
	return runPasswd(args, os.Stdin, os.Stderr)
}

// runPasswd is passwdMain reading passwords from stdin and writing
// prompts and usage to out.
func runPasswd(args []string, stdin io.Reader, out io.Writer) error {
	fl := flag.NewFlagSet("mqcluster passwd", flag.ContinueOnError)
	fl.SetOutput(out)
	fl.Usage = func() { fmt.Fprint(out, passwdUsage) }
	create := fl.Bool("c", false, "")
	batch := fl.Bool("b", false, "")
	del := fl.Bool("D", false, "")
	useArgon := fl.Bool("argon2id", false, "")
	useBcrypt := fl.Bool("bcrypt", false, "")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	rest := fl.Args()
	want := 2
	if *batch {
		want = 3
	}
	switch {
	case *useArgon && *useBcrypt:
		return errors.New("passwd: choose one of --argon2id and --bcrypt")
	case *del && (*create || *batch || *useArgon || *useBcrypt):
		return errors.New("passwd: -D takes no other option")
	case len(rest) != want:
		fl.Usage()
		return fmt.Errorf("passwd: want %d arguments, got %d", want, len(rest))
	}
	file, user := rest[0], rest[1]
	if err := auth.ValidUsername(user); err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	pf, err := loadPasswordFile(file, *create)
	if err != nil {
		return err
	}
	if *del {
		if !pf.Delete(user) {
			return fmt.Errorf("passwd: user %q is not in %s", user, file)
		}
		return auth.WriteFileAtomic(file, pf.Bytes(), 0o600)
	}
	var password []byte
	if *batch {
		password = []byte(rest[2])
	} else if password, err = askPassword(stdin, out); err != nil {
		return err
	}
	if len(password) == 0 {
		return errors.New("passwd: empty password")
	}
	alg := auth.Argon2id
	if *useBcrypt {
		alg = auth.Bcrypt
	}
	hash, err := auth.HashPassword(alg, password)
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	if err := pf.Set(user, hash); err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	return auth.WriteFileAtomic(file, pf.Bytes(), 0o600)
}

// loadPasswordFile reads the file to edit; with create it starts empty.
func loadPasswordFile(file string, create bool) (*auth.PasswordFile, error) {
	if create {
		return auth.ParsePasswordFile(file, nil)
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("passwd: %s does not exist; -c creates it", file)
	}
	if err != nil {
		return nil, fmt.Errorf("passwd: %w", err)
	}
	return auth.ParsePasswordFile(file, data)
}

// askPassword asks for the password twice on a terminal, without echo.
// Standard input that is not a terminal gives the password on its first
// line and, optionally, the confirmation on its second.
func askPassword(stdin io.Reader, out io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(out, "Password: ")
		p1, err := term.ReadPassword(fd)
		fmt.Fprintln(out)
		if err != nil {
			return nil, fmt.Errorf("passwd: %w", err)
		}
		fmt.Fprint(out, "Reenter password: ")
		p2, err := term.ReadPassword(fd)
		fmt.Fprintln(out)
		if err != nil {
			return nil, fmt.Errorf("passwd: %w", err)
		}
		if string(p1) != string(p2) {
			return nil, errors.New("passwd: passwords do not match")
		}
		return p1, nil
	}
	br := bufio.NewReader(stdin)
	p1, err := readLine(br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("passwd: no password on standard input")
		}
		return nil, fmt.Errorf("passwd: %w", err)
	}
	p2, err := readLine(br)
	switch {
	case errors.Is(err, io.EOF):
		return []byte(p1), nil // no confirmation line
	case err != nil:
		return nil, fmt.Errorf("passwd: %w", err)
	case p1 != p2:
		return nil, errors.New("passwd: passwords do not match")
	}
	return []byte(p1), nil
}

// readLine returns one line without its line end; io.EOF when there is
// none.
func readLine(br *bufio.Reader) (string, error) {
	l, err := br.ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || l == "") {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r"), nil
}
