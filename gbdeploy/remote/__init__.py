"""What runs on a target, and how gbdeploy reaches it.

far_end/   the code that runs on the target, as real files shipped with the package:
           `lib.sh` (the shell functions every deploy script calls) and its Python helper.
           Python sends the library ahead of a script and writes only the quoted variable
           prelude and one call line per step; the files are linted in the tests
           (shellcheck, `dash -n`).
"""
