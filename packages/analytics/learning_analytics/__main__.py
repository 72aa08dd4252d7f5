from learning_analytics.main import main

main()
