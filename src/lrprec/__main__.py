from lrprec.cli import main

if __name__ == "__main__":  # not when a spawned process (the demo's second one) imports its parent's main module
    main()
